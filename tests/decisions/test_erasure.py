"""Document form 2 and erasing decisions' personal inputs (issue 20): the values and the
salt go, the commitments stay, and verify_chain still proves every decision.

Runs on PostgreSQL and SQLite; the triggers are PostgreSQL's.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from django.db import DatabaseError, connection, transaction

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.decisions import erasure, holds
from auditapp.decisions.models import Decision, ErasedRange, Erasure
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.verification import verify_chain
from auditapp.errors import Conflict
from auditapp.hashing import canonical_time
from tests.decisions.test_sealing import tampering
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db
postgresql_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="the append-only triggers are PostgreSQL's"
)
SYSTEM = roles.system_actor()


def recorded(ingest, count: int, **fields) -> list[Decision]:
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(count, **fields))]
    return list(Decision.objects.filter(pk__in=ids).order_by("id"))


def readme_hash(decision: Decision) -> str:
    """The README's recipe for a form-2 decision, independently of hashing.py."""
    sensitive = decision.model_version.parsed_schema.sensitive_names
    salt = bytes(decision.salt)
    derived = hmac.new(salt, b"inputs", hashlib.sha256).digest()[:16]

    def commit(s: bytes, values: dict) -> str:
        text = json.dumps(
            {"salt": s.hex(), "values": values}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(text.encode()).hexdigest()

    inputs = decision.full_inputs()  # the sensitive ones are sealed (encryption at rest)
    document = {
        "artifact_sha256": decision.model_version.artifact_sha256,
        "document_form": 2,
        "inputs": commit(derived, {k: v for k, v in inputs.items() if k not in sensitive}),
        "metadata": decision.metadata,
        "model": decision.registered_model.name,
        "predicted_at": canonical_time(decision.predicted_at),
        "prediction": decision.prediction,
        "recorded_at": canonical_time(decision.recorded_at),
        "request_id": decision.request_id,
        "score": decision.score,
        "sensitive_inputs": commit(salt, {k: v for k, v in inputs.items() if k in sensitive}),
        "source": decision.source,
        "subject_ref": decision.subject_ref,
        "version": decision.model_version.version,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def erase_all(decisions, reason="test") -> erasure.ErasurePlan:
    plan = erasure.plan_erasure(
        Decision.objects.filter(pk__in=[d.pk for d in decisions]),
        cause=Erasure.SUBJECT_REQUEST,
        reason=reason,
    )
    return erasure.erase(SYSTEM, plan, via="command")


def test_new_decisions_commit_to_every_input_and_hash_as_the_readme_says(model_version, ingest):
    decisions = recorded(ingest, 3)
    for decision in decisions:
        assert decision.document_form == 2
        assert decision.content_hash == readme_hash(decision) == decision.compute_content_hash()
        assert "inputs" in decision.document() and isinstance(decision.document()["inputs"], str)


def test_erasure_keeps_the_hash_and_verify_chain_passes(model_version, ingest):
    decisions = recorded(ingest, 4)
    hashes = {d.pk: d.content_hash for d in decisions}
    seal_new_records()
    plan = erase_all(decisions[:2], reason="subject asked")
    assert plan.declaration is not None and len(plan.ids) == 2
    for decision in Decision.objects.filter(pk__in=hashes).order_by("id"):
        erased = decision.pk in plan.ids
        assert decision.erased is erased
        assert (decision.inputs == {}) is erased and (decision.salt is None) is erased
        # the encrypted sensitive values and their blind-index tokens go too: with the data
        # key they would still be readable
        assert (decision.sealed_inputs is None) is erased
        assert (decision.sensitive_tokens is None) is erased
        assert decision.content_hash == hashes[decision.pk] == decision.compute_content_hash()
        if erased:
            assert decision.kept_commitments["erasure"] == plan.declaration.pk
    declaration = plan.declaration
    assert (declaration.decisions == 2 and declaration.scope["ranges"] == [list(plan.ids)]) or (
        len(declaration.scope["ranges"]) == 2
    )
    assert ErasedRange.objects.filter(erasure=declaration).count() >= 1
    assert AuditEvent.objects.filter(action="decisions.erased").count() == 1
    seal_new_records()
    result = verify_chain()
    assert result.ok, result.first_bad
    assert result.decisions == 4
    assert result.records.get("erasure") == 1


def test_a_changed_kept_commitment_is_caught(model_version, ingest):
    (decision,) = recorded(ingest, 1)
    seal_new_records()
    erase_all([decision])
    seal_new_records()
    with tampering() as cursor:
        cursor.execute(
            "UPDATE decisions_decision SET kept_commitments = %s WHERE id = %s",
            [json.dumps({"inputs": "0" * 64, "sensitive_inputs": "0" * 64}), decision.pk],
        )
    result = verify_chain()
    assert not result.ok
    assert result.first_bad["id"] == decision.pk


def test_decisions_of_older_forms_and_held_ones_are_not_erased(
    model_version, ingest, compliance_officer
):
    older, held, free = recorded(ingest, 3)
    with tampering() as cursor:  # as recorded before document form 2: inputs in clear
        cursor.execute(
            "UPDATE decisions_decision SET document_form = NULL, salt = NULL WHERE id = %s",
            [older.pk],
        )
    hold = holds.place_hold(
        roles.Actor(user=compliance_officer),
        {"subject_ref": held.subject_ref, "reason": "litigation 2026-17"},
    )
    plan = erasure.plan_erasure(
        Decision.objects.filter(pk__in=[older.pk, held.pk, free.pk]),
        cause=Erasure.RETENTION,
        reason="retention",
    )
    assert plan.ids == [free.pk]
    assert plan.older_form == 1
    assert plan.held == {hold.pk: 1}
    assert any("legal hold" in r for r in plan.refusals)
    assert any("document form 2" in r for r in plan.refusals)


def test_nothing_to_erase_declares_nothing(model_version, ingest):
    plan = erasure.erase(
        SYSTEM,
        erasure.plan_erasure(Decision.objects.none(), cause=Erasure.RETENTION, reason="r"),
    )
    assert plan.declaration is None and Erasure.objects.count() == 0


@postgresql_only
def test_the_triggers_refuse_any_other_update(model_version, ingest):
    decision, other = recorded(ingest, 2)
    seal_new_records()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "UPDATE decisions_decision SET inputs = '{}', salt = NULL WHERE id = %s",
            [decision.pk],
        )
    plan = erase_all([decision])
    declared = str(plan.declaration.pk)
    kept = json.dumps({"inputs": "a", "sensitive_inputs": "b", "erasure": int(declared)})
    attempts = [
        # an old declaration opens nothing
        (
            "UPDATE decisions_decision SET inputs = '{}', salt = NULL, kept_commitments = %s "
            "WHERE id = %s",
            [kept, other.pk],
        ),
    ]
    for sql, params in attempts:
        with (
            pytest.raises(DatabaseError, match="UPDATE refused"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("SELECT set_config('attest.erasure', %s, true)", [declared])
            cursor.execute(sql, params)


@postgresql_only
def test_an_erasure_changing_anything_else_is_refused(model_version, ingest, monkeypatch):
    (decision,) = recorded(ingest, 1)
    seal_new_records()

    def also_the_score(rows, declaration_id):
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('attest.erasure', %s, true)", [str(declaration_id)])
            for pk, kept in rows:
                cursor.execute(
                    "UPDATE decisions_decision SET inputs = '{}', salt = NULL, "
                    "kept_commitments = %s, score = 0.01 WHERE id = %s",
                    [kept, pk],
                )

    monkeypatch.setattr(erasure, "_update", also_the_score)
    with pytest.raises(DatabaseError, match="UPDATE refused"):
        erase_all([decision])
    decision.refresh_from_db()
    assert decision.inputs and decision.salt is not None and Erasure.objects.count() == 0


def test_an_erased_decision_reads_as_erased_and_its_hash_recomputes_from_the_api(
    model_version, ingest, api_client, auditor, compliance_officer
):
    """The README's recipe on an erased decision: the commitments are all there is."""
    (decision,) = recorded(ingest, 1)
    before = api_client(compliance_officer).get(f"/api/v1/decisions/{decision.pk}").json()
    assert before["erased"] is False and len(before["inputs_salt"]) == 32
    erase_all([decision])
    for user in (auditor, compliance_officer):
        d = api_client(user).get(f"/api/v1/decisions/{decision.pk}").json()
        assert d["erased"] is True and d["inputs"] == {} and d["inputs_salt"] is None
        assert d["salt"] is None and d["erasure"] == Erasure.objects.get().pk
        assert d["inputs_commitment"] == before["inputs_commitment"]
        keys = ("model", "version", "request_id", "subject_ref", "prediction", "score")
        keys += ("source", "metadata")
        document = {k: d[k] for k in keys}
        document |= {
            "artifact_sha256": decision.model_version.artifact_sha256,
            "predicted_at": canonical_time(decision.predicted_at),
            "recorded_at": canonical_time(decision.recorded_at),
            "inputs": d["inputs_commitment"],
            "sensitive_inputs": d["sensitive_inputs_commitment"],
            "document_form": 2,
        }
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode()).hexdigest() == d["content_hash"]
        assert d["content_hash"] == decision.content_hash


def test_an_erased_decision_is_not_explained_again_and_keeps_its_attributions(
    model_version, ingest, api_client, compliance_officer
):
    """Asking to explain an erased decision again set its done SHAP to pending: the worker,
    finding no inputs, failed it, and the attributions the README says are kept were gone
    from the decision, its notice and the access report. Counterfactuals and what-ifs
    failed as obscurely (a missing input each, a ValueError)."""
    from explain.models import Explanation

    (decision,) = recorded(ingest, 1, score=0.9)
    Explanation.objects.filter(decision=decision, method="shap").update(status=Explanation.DONE)
    erase_all([decision])
    client = api_client(compliance_officer)
    url = f"/api/v1/decisions/{decision.pk}"

    explained = client.post(f"{url}/explain", {"methods": ["shap", "lime"]}, format="json")
    counterfactuals = client.post(f"{url}/counterfactuals", {}, format="json")
    inputs = DecisionPayloadFactory()["inputs"]
    what_if = client.post(f"{url}/what-if", {"inputs": inputs}, format="json")

    for response in (explained, counterfactuals, what_if):
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "inputs_erased"
    assert Explanation.objects.get(decision=decision, method="shap").status == Explanation.DONE
    assert not AuditEvent.objects.filter(
        action__in=["decision.explain_requested", "decision.counterfactuals_requested"]
    ).exists()


def test_a_hold_placed_after_the_plan_stops_the_erasure_whole(
    model_version, ingest, compliance_officer
):
    """The plan read the holds, the erasure trusted it: a hold placed between the two was
    not honoured and the held decisions' inputs were erased."""
    decisions = recorded(ingest, 2)
    plan = erasure.plan_erasure(
        Decision.objects.filter(pk__in=[d.pk for d in decisions]),
        cause=Erasure.RETENTION,
        reason="retention",
    )
    assert len(plan.ids) == 2
    hold = holds.place_hold(
        roles.Actor(user=compliance_officer),
        {"subject_ref": decisions[0].subject_ref, "reason": "litigation 2026-18"},
    )

    with pytest.raises(Conflict, match=f"legal hold {hold.pk} was placed"):
        erasure.erase(SYSTEM, plan, via="command")

    assert not Erasure.objects.exists()
    assert all(d.kept_commitments is None for d in Decision.objects.all())
    assert not AuditEvent.objects.filter(action=erasure.ERASED_EVENT).exists()


def test_a_hold_placed_and_released_after_the_plan_lets_it_erase(
    model_version, ingest, compliance_officer
):
    decisions = recorded(ingest, 1)
    plan = erasure.plan_erasure(
        Decision.objects.filter(pk__in=[d.pk for d in decisions]),
        cause=Erasure.RETENTION,
        reason="retention",
    )
    officer = roles.Actor(user=compliance_officer)
    hold = holds.place_hold(
        officer, {"subject_ref": decisions[0].subject_ref, "reason": "a mistake"}
    )
    holds.release_hold(officer, hold.pk, {"reason": "placed by mistake"})

    assert erasure.erase(SYSTEM, plan, via="command").declaration is not None


def test_a_plan_whose_decisions_were_erased_meanwhile_declares_nothing(model_version, ingest):
    """Two erasures planned at once (a person's request beside a retention run): the second
    had declared, and sealed, the erasure of decisions the first had already erased."""
    decisions = recorded(ingest, 2)
    chosen = Decision.objects.filter(pk__in=[d.pk for d in decisions])
    first = erasure.plan_erasure(chosen, cause=Erasure.RETENTION, reason="retention")
    second = erasure.plan_erasure(chosen, cause=Erasure.SUBJECT_REQUEST, reason="Art. 17")
    erasure.erase(SYSTEM, first, via="command")

    with pytest.raises(Conflict, match="2 of the 2 decisions were erased meanwhile"):
        erasure.erase(SYSTEM, second, via="command")

    assert Erasure.objects.count() == 1
    assert AuditEvent.objects.filter(action=erasure.ERASED_EVENT).count() == 1
    seal_new_records()
    assert verify_chain().ok
