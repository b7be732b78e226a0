"""Tampering as someone with database access would, beyond decisions' own fields.

The findings (issue "Proof that holds"): a decision inserted at the tail with a
valid hash and a time a month back passed verification, even against a kept
seal, with no ingestion event behind it; and what was not in the log (the
registry, review cases, outcomes, feedback) could be rewritten unnoticed.
Each case here first shows the row as an attacker leaves it, then what
verification names.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson
import pytest
from django.core.management import call_command
from django.db import connection
from django.template.loader import render_to_string
from django.utils import timezone

from auditapp.accounts import records, roles
from auditapp.accounts.models import AuditEvent, LogRecord
from auditapp.approvals import services as approvals
from auditapp.decisions.models import Decision
from auditapp.decisions.outcomes import record_outcomes
from auditapp.decisions.sealing import exported_seal, latest_seal, seal_new_records
from auditapp.decisions.verification import verify_chain
from auditapp.hashing import canonical_time, content_hash, new_salt
from auditapp.registry.models import StageChange
from auditapp.registry.services import change_stage, set_four_eyes
from auditapp.reviews.models import CaseEvent, ReviewCase
from auditapp.reviews.services import open_cases, submit_feedback, take_case
from explain import batches
from explain.models import ExplanationResult
from tests.decisions.test_sealing import tampering
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db


def now_text() -> str:
    return canonical_time(timezone.now())


@pytest.fixture
def recorded(model_version, ingest, ml_engineer, domain_expert, admin):
    """Decisions with an outcome, feedback, a review case taken, a stage change; all sealed."""
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(4))]
    engineer, expert = roles.Actor(user=ml_engineer), roles.Actor(user=domain_expert)
    record_outcomes(
        engineer,
        {
            "outcomes": [
                {
                    "decision_id": ids[0],
                    "outcome": "bad",
                    "observed_at": canonical_time(timezone.now()),
                }
            ]
        },
    )
    decision = Decision.objects.get(pk=ids[1])
    submit_feedback(expert, decision, {"verdict": "disagree", "comment": "income misread"})
    (case,) = ReviewCase.objects.filter(decision=decision)
    take_case(expert, case)
    # Under four-eyes: the engineer asks, the admin approves (a request and its decision).
    set_four_eyes(engineer, model_version.registered_model, True)
    asked = change_stage(engineer, model_version, "production")
    approvals.approve(roles.Actor(user=admin), asked.pk)
    seal_new_records()
    result = verify_chain()
    assert result.ok, result.first_bad
    return ids


def test_every_kind_is_in_the_log_with_its_own_record(recorded):
    result = verify_chain()

    assert result.records == {
        "approval": 1,
        "approval_step": 1,
        "case_event": 2,  # the case opened by the disagreement, then taken
        "erasure": 0,  # tests/decisions/test_erasure.py
        "explanation": 0,  # no worker ran here
        "feedback": 1,
        "legal_hold": 0,  # tests/decisions/test_holds_and_retention.py
        "model_version": 1,
        "outcome": 1,
        "override": 0,
        "retirement": 0,
        "review_case": 1,
        "stage_change": 2,  # registered in staging, then production
    }
    kinds = set(LogRecord.objects.values_list("kind", flat=True))
    assert kinds == {
        "approval",
        "approval_step",
        "case_event",
        "feedback",
        "model_version",
        "outcome",
        "review_case",
        "stage_change",
    }
    assert latest_seal().record_count == LogRecord.objects.count()


def test_a_record_hash_is_sha256_of_its_documented_json(recorded):
    """Recomputed from the raw row, without the project's hashing code."""
    change = StageChange.objects.order_by("id").last()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT model_version_id, from_stage, to_stage, changed_by_id, changed_at "
            "FROM registry_stagechange WHERE id = %s",
            [change.pk],
        )
        version, from_stage, to_stage, by, at = cursor.fetchone()
    if isinstance(at, str):  # SQLite
        at = datetime.fromisoformat(at).replace(tzinfo=UTC)
    document = {
        "kind": "stage_change",
        "id": change.pk,
        "record": {
            "model_version_id": version,
            "from_stage": from_stage,
            "to_stage": to_stage,
            "changed_by_id": by,
            "changed_at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        },
    }
    expected = hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()

    record = LogRecord.objects.get(kind="stage_change", object_id=change.pk)
    assert record.content_hash == expected


# --- backdating ---------------------------------------------------------------------


def insert_decision_by_hand(template: Decision, request_id: str, recorded_at) -> int:
    """A plain INSERT (no trigger is in the way) with a hash that matches its fields."""
    schema_sensitive = template.model_version.parsed_schema.sensitive_names
    salt = new_salt()
    fields = {
        "artifact_sha256": template.model_version.artifact_sha256,
        "inputs": template.full_inputs(),
        "metadata": template.metadata,
        "model": template.registered_model.name,
        "predicted_at": canonical_time(template.predicted_at),
        "prediction": template.prediction,
        "recorded_at": canonical_time(recorded_at),
        "request_id": request_id,
        "score": template.score,
        "source": "api",
        "subject_ref": template.subject_ref,
        "version": template.model_version.version,
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO decisions_decision (registered_model_id, model_version_id, request_id, "
            "subject_ref, inputs, prediction, score, predicted_at, recorded_at, source, metadata, "
            "content_hash, salt, client) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s)",
            [
                template.registered_model_id,
                template.model_version_id,
                request_id,
                template.subject_ref,
                json.dumps(template.full_inputs()),
                json.dumps(template.prediction),
                template.score,
                connection.ops.adapt_datetimefield_value(template.predicted_at),
                connection.ops.adapt_datetimefield_value(recorded_at),
                "api",
                json.dumps(template.metadata),
                content_hash(fields, schema_sensitive, salt),
                salt,
                "",
            ],
        )
    return Decision.objects.get(request_id=request_id).pk


def test_a_backdated_insert_at_the_tail_is_named_even_against_a_kept_seal(recorded):
    kept = exported_seal(latest_seal())
    template = Decision.objects.get(pk=recorded[0])
    month_ago = timezone.now() - timedelta(days=30)

    forged = insert_decision_by_hand(template, "backdated-1", month_ago)
    seal_new_records()  # the next seal takes it in, as the finding saw

    result = verify_chain(against=kept)
    assert not result.ok
    assert (result.first_bad["kind"], result.first_bad["id"]) == ("decision", forged)
    assert "backdated" in result.first_bad["reason"]


def test_an_insert_with_a_fresh_time_has_no_ingestion_event(recorded):
    template = Decision.objects.get(pk=recorded[0])

    forged = insert_decision_by_hand(template, "forged-now", timezone.now())

    result = verify_chain()
    assert (result.first_bad["kind"], result.first_bad["id"]) == ("decision", forged)
    assert result.first_bad["reason"] == (
        "no ingestion event recorded it: it was not written by Attest"
    )
    seal_new_records()
    bad = verify_chain().first_bad
    assert (bad["id"], bad["seal"]) == (forged, latest_seal().index)


def test_a_backdated_audit_event_at_the_tail_is_named(recorded):
    event = AuditEvent.objects.order_by("id").last()
    at = timezone.now() - timedelta(days=30)
    forged = AuditEvent(
        at=at, actor_name="nobody", action="model_version.viewed", details={"note": "old"}
    )
    forged.content_hash = forged.compute_content_hash()
    forged.save(force_insert=True)
    assert forged.pk > event.pk

    bad = verify_chain().first_bad
    assert (bad["kind"], bad["id"]) == ("event", forged.pk)
    assert "backdated" in bad["reason"]


def test_a_seal_dated_before_the_one_before_it_is_named(recorded, ingest):
    ingest(DecisionPayloadFactory())
    (seal,) = seal_new_records()
    with tampering() as cursor:
        cursor.execute(
            "UPDATE decisions_seal SET sealed_at = %s WHERE id = %s",
            [connection.ops.adapt_datetimefield_value(timezone.now() - timedelta(days=2)), seal.pk],
        )

    bad = verify_chain().first_bad
    assert (bad["kind"], bad["index"]) == ("seal", seal.index)
    assert bad["reason"] == "it is dated before the seal before it"


# --- rows that were not in the log ---------------------------------------------------


@pytest.mark.parametrize(
    ("table", "kind", "assignment"),
    [
        ("decisions_outcome", "outcome", "outcome = '\"good\"'"),
        ("reviews_feedback", "feedback", "verdict = 'agree'"),
        ("reviews_caseevent", "case_event", 'details = \'{"by": "someone else"}\''),
        ("reviews_reviewcase", "review_case", "state = 'resolved'"),
        ("registry_modelversion", "model_version", "stage = 'archived'"),
        ("registry_stagechange", "stage_change", "to_stage = 'archived'"),
    ],
)
def test_a_rewritten_row_of_any_kind_is_named(recorded, table, kind, assignment):
    with tampering() as cursor:
        cursor.execute(f"SELECT max(id) FROM {table}")
        (row_id,) = cursor.fetchone()
        cursor.execute(f"UPDATE {table} SET {assignment} WHERE id = %s", [row_id])

    bad = verify_chain().first_bad
    assert (bad["kind"], bad["id"]) == (kind, row_id)
    assert bad["reason"] == "its stored fields do not match its latest record"
    assert bad["seal"] == latest_seal().index


def test_a_deleted_case_event_is_named(recorded):
    event = CaseEvent.objects.order_by("id").last()
    with tampering() as cursor:
        cursor.execute("DELETE FROM reviews_caseevent WHERE id = %s", [event.pk])

    bad = verify_chain().first_bad
    assert (bad["kind"], bad["id"]) == ("case_event", event.pk)
    assert bad["reason"] == "it was deleted: its record remains"


def test_a_stage_change_inserted_by_hand_is_not_in_the_log(recorded, model_version):
    with connection.cursor() as cursor:  # an INSERT: no trigger refuses it
        cursor.execute(
            "INSERT INTO registry_stagechange (model_version_id, from_stage, to_stage, "
            "changed_by_id, changed_at) VALUES (%s, 'production', 'archived', NULL, %s)",
            [model_version.pk, connection.ops.adapt_datetimefield_value(timezone.now())],
        )
    inserted = StageChange.objects.order_by("id").last()

    bad = verify_chain().first_bad
    assert (bad["kind"], bad["id"]) == ("stage_change", inserted.pk)
    assert bad["reason"] == "it is not in the log: no record of it was written"


def test_a_backdated_row_with_a_forged_record_is_named(recorded, model_version):
    """Even with a record written for it, a row dated a month back does not pass."""
    month_ago = timezone.now() - timedelta(days=30)
    change = StageChange(model_version=model_version, from_stage="production", to_stage="archived")
    change.changed_at = month_ago
    change.save()
    records.append("stage_change", [change.pk])

    bad = verify_chain().first_bad
    assert (bad["kind"], bad["id"]) == ("stage_change", change.pk)
    assert "backdated" in bad["reason"]


def test_a_resolved_case_rewritten_to_open_is_named_with_its_seal(recorded, domain_expert):
    case = ReviewCase.objects.get()
    with tampering() as cursor:
        cursor.execute("UPDATE reviews_reviewcase SET assignee_id = NULL WHERE id = %s", [case.pk])

    bad = verify_chain().first_bad
    assert (bad["kind"], bad["id"]) == ("review_case", case.pk)


def test_cases_opened_by_workers_are_recorded_with_their_events(model_version, ingest):
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(3))]

    reason = {"rule": "low_score", "detail": "score near the threshold"}
    opened = open_cases({ids[0]: [reason], ids[2]: [reason]})

    assert {c.decision_id for c in opened} == {ids[0], ids[2]}
    assert LogRecord.objects.filter(kind="review_case").count() == 2
    assert LogRecord.objects.filter(kind="case_event").count() == 2
    assert verify_chain().ok


def test_results_of_explanations_are_records_and_a_rewrite_is_named(model_version, ingest):
    """A worker's SHAP result joins the log; rewriting its base value is named."""
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(2))]
    batches.run_batch(model_version.pk, "shap", ids)  # the workers' own code
    seal_new_records()
    result = verify_chain()
    assert result.ok, result.first_bad
    assert result.records["explanation"] == ExplanationResult.objects.count() == 2

    target = ExplanationResult.objects.order_by("id").first()
    with tampering() as cursor:
        cursor.execute(
            "UPDATE explain_explanationresult SET base_value = base_value + 0.5 WHERE id = %s",
            [target.pk],
        )
    bad = verify_chain().first_bad
    assert (bad["kind"], bad["id"]) == ("explanation", target.pk)
    assert bad["reason"] == "its stored fields do not match its latest record"


def test_a_record_falsely_marked_as_backfilled_is_named(recorded):
    forged = LogRecord(kind="outcome", object_id=10**9, content_hash="0" * 64, backfilled=True)
    forged.save()

    problems = [p["reason"] for p in verify_chain().problems() if p["kind"] == "outcome"]
    assert "a record marked as written by an upgrade follows regular ones" in problems


def test_a_deleted_lime_result_is_named(model_version, ingest):
    """Deleting an explanation result (here LIME's) is named, like any deleted record."""
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(2))]
    batches.run_batch(model_version.pk, "lime", ids)  # the workers' own code
    seal_new_records()
    assert verify_chain().ok
    target = ExplanationResult.objects.filter(config__method="lime").order_by("id").last()

    with tampering() as cursor:
        cursor.execute(
            "UPDATE explain_explanation SET result_id = NULL WHERE result_id = %s", [target.pk]
        )
        cursor.execute("DELETE FROM explain_explanationresult WHERE id = %s", [target.pk])

    bad = verify_chain().first_bad
    assert (bad["kind"], bad["id"]) == ("explanation", target.pk)
    assert bad["reason"] == "it was deleted: its record remains"


def test_a_log_truncated_at_its_tail_is_named(recorded):
    """The newest sealed decisions deleted with everything pointing at them: named."""
    last = max(recorded)
    with tampering() as cursor:
        cursor.execute("DELETE FROM explain_topreasons WHERE decision_id = %s", [last])
        cursor.execute("DELETE FROM explain_explanation WHERE decision_id = %s", [last])
        cursor.execute("DELETE FROM explain_counterfactualwork WHERE decision_id = %s", [last])
        cursor.execute("DELETE FROM decisions_decision WHERE id = %s", [last])

    bad = verify_chain().first_bad
    assert (bad["kind"], bad["id"], bad["reason"]) == ("decision", last, "it was deleted")


def test_verification_names_each_kind_it_checked_as_people_read_it(recorded, capsys):
    """The command and the page count the other kinds' rows in words, "1 feedback"."""
    result = verify_chain()
    assert result.records["feedback"] == 1 and result.records["outcome"] == 1
    described = records.describe_counts(result.records)
    assert "1 feedback" in described and "1 outcome" in described and "feedbacks" not in described

    call_command("verify_chain", "--no-progress")
    assert f"in the log beside them: {described}." in capsys.readouterr().out

    job = SimpleNamespace(status="done", finished=True, result=result.as_dict())
    html = " ".join(render_to_string("decisions/_verification.html", {"job": job}).split())
    assert f"{result.decisions} decisions, {result.events} audit events, {described};" in html
    assert "Not sealed yet" not in html  # the fixture sealed everything
