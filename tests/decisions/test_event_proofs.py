"""Inclusion proofs of audit events (GET /api/v1/audit/events/{id}/proof), checked independently.

An audit event's leaf data is b"event:" followed by its content hash; its proof
is checked with the RFC 9162 verifier of test_proofs.py, which shares no code
with the project's Merkle module, against older and later seals alike.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Seal
from auditapp.decisions.proofs import inclusion_holds, inclusion_proof
from auditapp.decisions.sealing import seal_new_records
from tests.decisions.test_proofs import grow_log, hexes, inclusion_ok, signature_ok
from tests.decisions.test_sealing import log_leaves
from tests.factories import DecisionPayloadFactory
from tests.workers import ROOT

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(api_client, auditor):
    return api_client(auditor)


def proof_of(client, event_id: int, **params):
    return client.get(f"/api/v1/audit/events/{event_id}/proof", params)


def test_every_event_proof_checks_out_against_its_seal_and_every_later_one(
    model_version, ingest, client
):
    grow_log(ingest, batches=(3, 120, 1))
    seals = list(Seal.objects.order_by("index"))
    leaves = log_leaves()
    key = client.get("/api/v1/audit/public-key").json()
    sealed = AuditEvent.objects.filter(pk__lte=seals[-1].last_event_id).order_by("id")
    # Each seal as exported, its signature checked once: the same for every event's proof.
    exports = {
        seal.tree_size: client.get(f"/api/v1/audit/seals/{seal.tree_size}").json() for seal in seals
    }
    assert all(signature_ok(exported, key) for exported in exports.values())
    checked = 0

    for event in sealed:
        data = b"event:" + bytes.fromhex(event.content_hash)
        leaf_index = leaves.index(data)  # where the README's leaf order puts it
        for seal in seals:
            response = proof_of(client, event.pk, tree_size=seal.tree_size)
            if seal.tree_size <= leaf_index:  # an older seal than the event's
                assert response.status_code == 400
                error = response.json()["error"]
                assert error["code"] == "invalid"
                assert error["message"].startswith(
                    f"Audit event {event.pk} is leaf {leaf_index}, first sealed in the tree of size"
                )
                continue
            assert response.status_code == 200, response.json()
            proof = response.json()
            assert proof == {
                "event_id": event.pk,
                "content_hash": event.content_hash,
                "leaf_index": leaf_index,
                "tree_size": seal.tree_size,
                "root_hash": seal.root_hash,
                "audit_path": proof["audit_path"],
            }
            exported = exports[seal.tree_size]
            assert inclusion_ok(
                data,
                leaf_index,
                seal.tree_size,
                hexes(proof["audit_path"]),
                bytes.fromhex(exported["root_hash"]),
            )
            # The bare content hash is a decision's leaf, not this event's.
            assert not inclusion_ok(
                bytes.fromhex(event.content_hash),
                leaf_index,
                seal.tree_size,
                hexes(proof["audit_path"]),
                bytes.fromhex(exported["root_hash"]),
            )
            checked += 1
    assert checked > 150  # events of each seal, against their seal and the later ones


def test_the_latest_seal_is_the_default_and_the_service_proof_holds(model_version, ingest, client):
    grow_log(ingest, batches=(2, 2))
    event = AuditEvent.objects.order_by("id").first()

    proof = proof_of(client, event.pk).json()

    latest = Seal.objects.order_by("-index").first()
    assert (proof["tree_size"], proof["root_hash"]) == (latest.tree_size, latest.root_hash)
    assert proof == inclusion_proof(event)
    assert inclusion_holds(proof)
    assert not inclusion_holds(dict(proof, leaf_index=proof["leaf_index"] + 1))


def test_bad_requests_are_named(model_version, ingest, client):
    grow_log(ingest, batches=(1,))
    sealed = AuditEvent.objects.order_by("id").first()
    unsealed = record_event("test.after_the_seal")
    size = Seal.objects.get().tree_size

    def error(event_id, **params):
        response = proof_of(client, event_id, **params)
        return response.status_code, response.json()["error"]

    status, body = error(unsealed.pk)
    assert (status, body["code"]) == (404, "not_sealed")
    assert body["message"] == (
        f"Audit event {unsealed.pk} is not sealed yet; seals are made every minute."
    )
    status, body = error(sealed.pk, tree_size="x")
    assert (status, body["code"], body["details"]) == (
        400,
        "invalid",
        {"tree_size": ["not a tree size: 'x'"]},
    )
    assert "tree_size must be a positive integer" in body["message"]
    status, body = error(sealed.pk, tree_size=size + 1)
    assert (status, body["code"]) == (404, "no_such_seal")
    status, body = error(sealed.pk, tree_size="0")
    assert (status, body["code"]) == (400, "invalid")
    assert error(unsealed.pk + 1000) == (
        404,
        {"code": "not_found", "message": "No such audit event.", "details": None},
    )


def test_an_event_the_caller_may_not_see_answers_as_a_missing_one(
    model_version, ingest, token_client, admin
):
    """A token limited to another model reads none of this model's events, nor their proofs."""
    ingest(DecisionPayloadFactory())
    seal_new_records()
    event = AuditEvent.objects.get(action="decisions.ingested")
    assert event.model == "credit"
    missing = AuditEvent.objects.order_by("-id").first().pk + 1000
    elsewhere, _ = token_client(admin, ["read"], models=["fraud"])
    here, _ = token_client(admin, ["read"], models=["credit"])

    hidden = proof_of(elsewhere, event.pk)
    absent = proof_of(elsewhere, missing)
    absent_for_all = proof_of(here, missing)

    assert hidden.status_code == absent.status_code == absent_for_all.status_code == 404
    assert hidden.content == absent.content == absent_for_all.content
    assert hidden.headers.get("Content-Type") == absent.headers.get("Content-Type")
    assert proof_of(here, event.pk).status_code == 200


def test_a_role_without_the_audit_log_is_refused_whatever_the_event(
    model_version, ingest, api_client, ml_engineer
):
    """Its answer is the same 403 for an event that exists and one that does not."""
    grow_log(ingest, batches=(1,))
    event = AuditEvent.objects.order_by("id").first()
    client = api_client(ml_engineer)

    existing = proof_of(client, event.pk)
    missing = proof_of(client, event.pk + 1000)

    assert existing.status_code == missing.status_code == 403
    assert existing.json()["error"]["code"] == "forbidden"
    assert existing.json()["error"]["message"] == missing.json()["error"]["message"]


def test_verify_proof_accepts_an_event_proof_and_refuses_it_as_a_decisions(
    model_version, ingest, client, tmp_path
):
    grow_log(ingest, batches=(2, 2))
    event = AuditEvent.objects.order_by("id")[3]
    proof = proof_of(client, event.pk).json()
    files = {
        "seal": client.get(f"/api/v1/audit/seals/{proof['tree_size']}").json(),
        "proof": proof,
        "as_decision": {
            "decision_id": event.pk,
            **{k: v for k, v in proof.items() if k != "event_id"},
        },
        "key": client.get("/api/v1/audit/public-key").json(),
    }
    for name, document in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(document))

    def verify(proof_file: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "manage.py",
                "verify_proof",
                str(tmp_path / "seal.json"),
                str(tmp_path / proof_file),
                "--public-key",
                str(tmp_path / "key.json"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"PATH": "/usr/bin:/bin", "ATTEST_VAR_DIR": str(tmp_path / "var")},
        )

    valid, as_decision = verify("proof.json"), verify("as_decision.json")

    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.startswith(
        f"VALID: audit event {event.pk} is leaf {proof['leaf_index']} of the tree of "
        f"{proof['tree_size']} leaves"
    )
    assert as_decision.returncode == 1
    assert "the audit path does not lead from the content hash to the seal's root" in (
        as_decision.stderr
    )
