"""Explanation results are insert-only records: kept through recomputation, refused any
change, stored compactly, and read back as exactly the document written."""

from __future__ import annotations

import copy
import struct

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.models import LogRecord
from auditapp.accounts.records import write as write_records
from auditapp.decisions.models import Decision
from auditapp.hashing import sha256_hex
from auditapp.registry.agreement import judge_agreement
from auditapp.registry.models import agreement_settings
from explain import batches, claims, engine, explainers, records, storing
from explain.models import Explanation, ExplanationConfig, ExplanationResult, TopReasons
from explain.presenters import explanation_json
from explain.results import latest_result, result_documents, stale_pointers
from explain.services import request_explanations
from tests.conftest import embedded_default
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def decisions(model_version, ingest) -> list[Decision]:
    results = ingest(*DecisionPayloadFactory.build_batch(4))
    return list(Decision.objects.filter(pk__in=[r["id"] for r in results]).order_by("pk"))


@pytest.fixture
def explained(decisions, model_version) -> list[Decision]:
    ids = [d.pk for d in decisions]
    batches.run_batch(model_version.pk, "shap", ids)
    batches.run_batch(model_version.pk, "lime", ids)
    return decisions


def store(model_version, method: str, decision_ids: list[int], mutate=None):
    """Claim, explain and store a batch as run_batch does; the results as inserted."""
    claimed = claims.claim(model_version.pk, method, decision_ids)
    context, explainer = explainers.cached_explainer(model_version, method)
    computed = batches.explain_claimed(context, explainer, method, claimed, False, 1e-3)
    if mutate:
        mutate(computed)
    return storing.store_results(claimed, computed, model_version, method, 12.5)


# -- insert-only -----------------------------------------------------------------------------


# Refused changes at the model layer and by PostgreSQL's triggers: with every other
# append-only table in tests/decisions/test_append_only.py.


# -- recomputation ---------------------------------------------------------------------------


def test_a_recomputation_keeps_the_old_result_and_shows_the_new_one(
    explained, model_version, compliance_officer
):
    decision = explained[0]
    lime = Explanation.objects.with_results().get(decision=decision, method="lime")
    old = lime.result
    old_document, old_json = old.document(), explanation_json(lime)

    request_explanations(roles.Actor(user=compliance_officer), decision, ["lime"])
    batches.run_batch(model_version.pk, "lime", [decision.pk], new_seed=True)

    kept = ExplanationResult.objects.filter(decision=decision, config__method="lime")
    assert kept.count() == 2
    assert ExplanationResult.objects.get(pk=old.pk).document() == old_document  # unchanged
    lime = Explanation.objects.with_results().get(decision=decision, method="lime")
    newest = latest_result(decision.pk, "lime")
    assert lime.result_id == newest.pk and newest.pk > old.pk
    shown = explanation_json(lime)
    assert shown["seed"] == newest.seed != old_json["seed"]
    assert shown["attributions"] == newest.attribution_map != old_json["attributions"]
    assert shown["attributions"] != old.attribution_map
    # One configuration serves both results: it is stored once.
    assert newest.config_id == old.config_id
    assert stale_pointers() == []


def test_a_tampered_pointer_is_detected(explained, model_version):
    decision = explained[0]
    old = ExplanationResult.objects.get(decision=decision, config__method="shap")
    Explanation.objects.filter(decision=decision, method="shap").update(status="pending")
    batches.run_batch(model_version.pk, "shap", [decision.pk])
    assert stale_pointers() == []

    shap_row = Explanation.objects.get(decision=decision, method="shap")
    Explanation.objects.filter(pk=shap_row.pk).update(result=old)  # back to the older result
    assert stale_pointers() == [shap_row.pk]
    Explanation.objects.filter(pk=shap_row.pk).update(result=None)  # or no result at all
    assert stale_pointers() == [shap_row.pk]


# -- storage ----------------------------------------------------------------------------------


def test_results_are_stored_compactly_and_read_back_as_computed(explained, model_version):
    names = model_version.parsed_schema.names
    for explanation in Explanation.objects.with_results().filter(decision__in=explained):
        result = explanation.result
        packed = bytes(result.attributions)
        assert len(packed) == 8 * len(names)
        values = struct.unpack(f"<{len(names)}d", packed)
        assert explanation.attributions == dict(zip(names, values, strict=True))
        ranked = records.ranked(explanation.attributions)
        assert explanation.top_features == ranked and result.top_features is None
        # The configuration does not repeat the version's hashes; it shows them.
        assert "artifact_sha256" not in result.config.content
        assert explanation.config["artifact_sha256"] == model_version.artifact_sha256
        assert explanation.config["background_sha256"] == model_version.background_sha256
    assert ExplanationConfig.objects.count() == 2  # one per method, for 8 results
    assert ExplanationResult.objects.count() == 8


def test_a_row_keeps_what_its_configuration_does_not_fix_and_reads_back_as_computed(
    decisions, model_version
):
    """The tolerances live on the configuration, the score check and the agreement's verdict
    in words are derived when read: a row keeps the rest, and reads back as computed."""
    ids = [d.pk for d in decisions]
    computed: dict[str, list[dict]] = {}

    def keep(method):
        def mutate(results):
            computed[method] = [copy.deepcopy(r.quality) for r in results]

        return mutate

    shap_written = store(model_version, "shap", ids, keep("shap"))
    store(model_version, "lime", ids, keep("lime"))

    scores = {d.pk: d.score for d in decisions}
    for stored, full in zip(shap_written, computed["shap"], strict=True):
        row = ExplanationResult.objects.select_related("config").get(pk=stored.id)
        assert set(row.quality) == {
            "additivity_error",
            "additivity_ok",
            "model_output",
            "model_score",
        }
        assert row.config.content["additivity_tolerance"] == full["additivity_tolerance"]
        assert row.config.content["score_tolerance"] == full["score_tolerance"] == 1e-3
        # What the row dropped is what the computation derived from it.
        assert full["recorded_score"] == scores[stored.decision_id]
        assert full["score_error"] == abs(full["model_score"] - scores[stored.decision_id])
        shown = Explanation.objects.with_results().get(
            decision_id=stored.decision_id, method="shap"
        )
        assert shown.quality == full

    thresholds = agreement_settings(model_version.explain_settings)
    for explanation in Explanation.objects.with_results().filter(decision__in=ids, method="lime"):
        assert set(explanation.agreement) == set(records.STORED_AGREEMENT)
        shap = Explanation.objects.with_results().get(decision=explanation.decision, method="shap")
        figures = engine.agreement(shap.attributions, explanation.attributions)
        fidelity = explanation.result.quality["fidelity_r2"]
        expected = {**figures, **judge_agreement(figures, fidelity, thresholds)}
        assert explanation.quality["agreement_with_shap"] == expected
        assert expected["why"] and expected["min_fidelity"] == thresholds["min_fidelity"]
        assert {k: expected[k] for k in records.STORED_AGREEMENT} == explanation.agreement


def test_rows_written_whole_before_read_back_unchanged():
    """Results and agreements stored before the trim carry every figure: shown as stored."""
    full = {
        "additivity_error": 1e-16,
        "additivity_tolerance": 1e-6,
        "additivity_ok": True,
        "model_output": -1.2,
        "model_score": 0.23,
        "recorded_score": 0.5,
        "score_error": 0.27,
        "score_tolerance": 1e-3,
        "score_ok": False,
    }
    config = {"additivity_tolerance": 1e-9, "score_tolerance": 0.5}  # not the row's: kept
    assert records.stored_quality(full, config) == full
    assert records.shown_quality(full, config, lambda: 0.9) == full
    agreement = {"top_k": 3, "top_k_overlap": 1.0, "rank_correlation": 0.9, "judged": True}
    whole = {**agreement, "agrees": True, "why": "as judged then", "min_fidelity": 0.5}
    assert records.shown_agreement(whole, 0.1, lambda: {"min_fidelity": 0.9}) == whole


@pytest.mark.skipif(embedded_default(), reason="PostgreSQL's plan")
def test_only_unfinished_work_is_indexed_and_the_sweeper_reads_that_index(explained):
    """Done rows (nearly all) have no entry in the (status, updated_at) index; the sweeper's
    and the overview's queries, which ask for unfinished work, still use it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'unfinished_work'")
        (definition,) = cursor.fetchone()
        assert "WHERE" in definition and "done" not in definition, definition
        cursor.execute("SET enable_seqscan = off")  # a table this small is read whole otherwise
        stale = Q(status=Explanation.RUNNING, updated_at__lt=timezone.now()) | Q(
            status=Explanation.PENDING, updated_at__lt=timezone.now()
        )
        plans = [
            Explanation.objects.filter(stale).explain(),
            Explanation.objects.filter(status=Explanation.FAILED).explain(),
        ]
        cursor.execute("RESET enable_seqscan")
    for plan in plans:
        assert "unfinished_work" in plan, plan
    assert Explanation.objects.exclude(status=Explanation.DONE).count() == 0


def test_the_document_written_is_the_document_read_back(decisions, model_version):
    ids = [d.pk for d in decisions]
    name = model_version.parsed_schema.names[0]

    def negative_zero(computed):
        computed[0].attributions[name] = -0.0  # jsonb has no -0.0; bytes keep it
        computed[0].quality["negative_zero"] = -0.0
        computed[0].base_value = -0.0

    written = store(model_version, "shap", ids, negative_zero)
    written += store(model_version, "lime", ids)

    assert len(written) == 8
    read = dict(result_documents(ExplanationResult.objects.filter(decision__in=ids)))
    for stored in written:
        document = stored.document()
        assert read[stored.id] == document
        assert ExplanationResult.objects.get(pk=stored.id).document() == document
        assert sha256_hex(document) == records.result_hash(stored.values)
        assert set(document) == set(records.DOCUMENT_FIELDS)
    first = read[written[0].id]
    assert first["attributions"][name] == 0.0 and first["quality"]["negative_zero"] == 0.0
    assert first["base_value"] == 0.0
    assert first["method"] == "shap" and first["seed"] is None
    assert first["config"]["artifact_sha256"] == model_version.artifact_sha256
    assert read[written[4].id]["method"] == "lime" and read[written[4].id]["seed"] is not None
    assert first["computed_at"].endswith("+00:00")


def test_storing_a_batch_reads_nothing_more_of_its_decisions(decisions, model_version):
    """The claim read what the store needs (the decisions' predictions for the review
    rules, their times for the search's reasons): the store writes, it does not read them
    again. What it writes is what a verifier reads: a log record per result whose hash is
    the result's document, and the reasons at their decision's time."""
    ids = [d.pk for d in decisions]
    claimed = claims.claim(model_version.pk, "shap", ids)
    context, explainer = explainers.cached_explainer(model_version, "shap")
    computed = batches.explain_claimed(context, explainer, "shap", claimed, False, 1e-3)
    with CaptureQueriesContext(connection) as queries:
        stored = storing.store_results(claimed, computed, model_version, "shap", 12.5)

    reads = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert not [sql for sql in reads if Decision._meta.db_table in sql], reads
    recorded = dict(
        LogRecord.objects.filter(kind="explanation").values_list("object_id", "content_hash")
    )
    read_back = dict(result_documents(ExplanationResult.objects.filter(decision__in=ids)))
    assert recorded == {
        pk: sha256_hex({"kind": "explanation", "id": pk, "record": document})
        for pk, document in read_back.items()
    }
    assert set(recorded) == {s.id for s in stored}
    reasons = {r.decision_id: r for r in TopReasons.objects.filter(decision__in=ids)}
    for decision in decisions:
        ranked = records.ranked(latest_result(decision.pk, "shap").attribution_map)
        assert reasons[decision.pk].predicted_at == decision.predicted_at
        assert [reasons[decision.pk].first, reasons[decision.pk].second] == ranked[:2]


def test_a_log_record_refuses_a_hash_that_is_not_a_sha256_digest(decisions):
    """Hashes travel to PostgreSQL as an array literal: anything but hex digits is refused
    before it is sent, and nothing is written."""
    before = LogRecord.objects.count()
    for bad in ["a" * 63, "A" * 64, "a" * 63 + ",", 'a" , "b' + "a" * 58]:
        with pytest.raises(ValueError, match="not a sha256 hex digest"):
            write_records("explanation", [(1, "b" * 64), (2, bad)])
    assert LogRecord.objects.count() == before


# -- the migration of rows computed before results were records --------------------------------

OLD = ("explain", "0002_decision_served_by_the_unique_index")


@pytest.mark.django_db(transaction=True)
def test_the_migration_makes_a_result_of_every_explanation_that_holds_one(model_version, ingest):
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(3))]
    names = model_version.parsed_schema.names
    attributions = {name: (i - 4) / 7 for i, name in enumerate(names)}
    attributions[names[1]] = -0.0
    ranked = records.ranked(attributions)
    agreement = {"top_k": 3, "top_k_overlap": 1.0, "judged": True, "agrees": True, "why": "x"}
    config = {
        "num_samples": 5000,
        "background_sha256": model_version.background_sha256,
        "artifact_sha256": model_version.artifact_sha256,
    }
    call_command("migrate", "explain", OLD[1], verbosity=0)
    try:
        Old = (
            MigrationExecutor(connection)
            .loader.project_state(OLD)
            .apps.get_model("explain", "Explanation")
        )
        done = {
            "status": "done",
            "explainer": "LimeTabularExplainer",
            "library_version": "lime 0.2.0.1",
            "output_space": "probability",
            "base_value": 0.25,
            "attributions": attributions,
            "top_features": ranked,
            "config": config,
            "seed": 7,
            "duration_ms": 3.5,
        }
        Old.objects.filter(decision_id=ids[0], method="lime").update(
            **done, quality={"fidelity_r2": 0.5, "agreement_with_shap": agreement}
        )
        Old.objects.filter(decision_id=ids[1], method="lime").update(
            **{**done, "status": "failed", "error": "boom", "seed": 8}, quality={"fidelity_r2": 0.4}
        )
        stamped = Old.objects.get(decision_id=ids[0], method="lime").updated_at
    finally:
        # Every app: going back unapplied the other apps' migrations that depend on these.
        call_command("migrate", verbosity=0)

    rows = {e.decision_id: e for e in Explanation.objects.with_results().filter(method="lime")}
    first, second, third = rows[ids[0]], rows[ids[1]], rows[ids[2]]
    assert ExplanationResult.objects.count() == 2 and ExplanationConfig.objects.count() == 1
    assert third.result is None and third.status == "pending"
    assert explanation_json(first) == {
        "status": "done",
        "attempts": 0,
        "explainer": "LimeTabularExplainer",
        "library_version": "lime 0.2.0.1",
        "output_space": "probability",
        "base_value": 0.25,
        "attributions": attributions,
        "top_features": ranked,
        "quality": {"fidelity_r2": 0.5, "agreement_with_shap": agreement},
        "config": config,
        "seed": 7,
        "duration_ms": 3.5,
    }
    assert first.agreement == agreement and first.result.quality == {"fidelity_r2": 0.5}
    assert first.result.top_features == ranked[:3]
    assert first.result.computed_at == stamped
    assert (second.status, second.error, second.result.seed) == ("failed", "boom", 8)
    assert first.result.config.content == {"num_samples": 5000}
    assert stale_pointers() == []
    document = first.result.document()
    assert document["attributions"][names[1]] == 0.0 and document["config"] == config
