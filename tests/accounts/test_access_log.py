"""The access log and the hash chain through the API and the pages: roles, filters, CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.jobs import run_verification
from auditapp.decisions.models import VerificationJob
from auditapp.decisions.proofs import inclusion_holds
from auditapp.decisions.sealing import exported_seal, latest_seal, seal_new_records
from tests.accounts.test_role_matrix import expected_status, request_as, world  # noqa: F401
from tests.conftest import EVERYONE

pytestmark = pytest.mark.django_db


def browser(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def page_status(who: str, *needed: str) -> int:
    """What a page needing the capabilities answers: login for anonymous, else as the API."""
    if who == "anonymous":
        return 302
    status = expected_status(who, *needed, scoped=False)
    return status


# --- the role matrix ------------------------------------------------------------


@pytest.mark.parametrize("who", EVERYONE)
def test_audit_events_api(world, who):  # noqa: F811
    response = request_as(world, who, "get", "/api/v1/audit/events")

    assert response.status_code == expected_status(who, roles.READ_AUDIT, scoped=False)
    if response.status_code == 200:
        actions = {row["action"] for row in response.json()["results"]}
        assert "decisions.ingested" in actions
    else:
        assert "results" not in response.json()


@pytest.mark.parametrize("who", EVERYONE)
def test_verify_api(world, who):  # noqa: F811
    seal_new_records()

    response = request_as(world, who, "get", "/api/v1/audit/verify")

    assert response.status_code == expected_status(who, roles.VERIFY_CHAIN, scoped=False)
    if response.status_code == 200:
        body = response.json()
        assert body["ok"] is True
        assert (body["decisions"], body["seals"]) == (1, 1)
    else:
        assert "ok" not in response.json()


def seal_reader_status(who: str) -> int:
    """Seals and the public key: for those who verify the log or read decisions."""
    statuses = {expected_status(who, c, scoped=False) for c in SEAL_READERS}
    return 200 if 200 in statuses else min(statuses)


SEAL_READERS = (roles.VERIFY_CHAIN, roles.READ_DECISIONS)


@pytest.mark.parametrize("who", EVERYONE)
def test_latest_seal_api(world, who):  # noqa: F811
    seal_new_records()

    response = request_as(world, who, "get", "/api/v1/audit/seals/latest")

    assert response.status_code == seal_reader_status(who)
    if response.status_code == 200:
        assert response.json() == json.loads(json.dumps(exported_seal(latest_seal())))
        assert AuditEvent.objects.filter(action="seal.exported").count() == 1


@pytest.mark.parametrize("who", EVERYONE)
def test_inclusion_proof_api(world, who):  # noqa: F811
    seal_new_records()
    decision = world["decision"]

    response = request_as(world, who, "get", f"/api/v1/decisions/{decision.pk}/proof")

    assert response.status_code == expected_status(who, roles.READ_DECISIONS)
    if response.status_code == 200:
        body = response.json()
        assert inclusion_holds(body)
        assert (body["leaf_index"], body["tree_size"]) == (0, latest_seal().tree_size)
        assert body["content_hash"] == decision.content_hash


@pytest.mark.parametrize("who", EVERYONE)
def test_event_inclusion_proof_api(world, who):  # noqa: F811
    """Who reads the access log gets its events' proofs; a role that does not gets 403."""
    seal_new_records()
    event = AuditEvent.objects.get(action="decisions.ingested")

    response = request_as(world, who, "get", f"/api/v1/audit/events/{event.pk}/proof")

    assert response.status_code == expected_status(who, roles.READ_AUDIT, scoped=False)
    if response.status_code == 200:
        body = response.json()
        assert inclusion_holds(body)
        assert (body["event_id"], body["content_hash"]) == (event.pk, event.content_hash)
        assert body["tree_size"] == latest_seal().tree_size
    else:
        assert "audit_path" not in response.json()


@pytest.mark.parametrize("who", EVERYONE)
@pytest.mark.parametrize(
    "url", ["/api/v1/audit/seals", "/api/v1/audit/public-key", "/api/v1/audit/consistency?first=1"]
)
def test_seals_public_key_and_consistency_api(world, who, url):  # noqa: F811
    seal_new_records()
    url = url.replace("first=1", f"first={latest_seal().tree_size}")

    response = request_as(world, who, "get", url)

    assert response.status_code == seal_reader_status(who)


@pytest.mark.parametrize("who", EVERYONE)
def test_audit_pages(world, who):  # noqa: F811
    seal_new_records()
    user = world["users"][who]
    expected = page_status(who, roles.READ_AUDIT)

    page = browser(user).get("/audit/")
    download = browser(user).get("/audit/events.csv")

    assert page.status_code == download.status_code == expected
    if expected == 200:
        assert b"Access log" in page.content
        assert ("Verify the whole chain now" in page.content.decode()) == (
            roles.VERIFY_CHAIN in roles.ROLE_CAPABILITIES[who]
        )
    elif expected == 403:
        assert b"decisions.ingested" not in page.content


@pytest.mark.parametrize("who", EVERYONE)
def test_chain_pages(world, who):  # noqa: F811
    seal_new_records()
    user = world["users"][who]
    expected = page_status(who, roles.VERIFY_CHAIN)

    verify = browser(user).post("/audit/verify", HTTP_HX_REQUEST="true")
    seal = browser(user).get("/audit/seal.json")

    assert verify.status_code == expected
    assert seal.status_code == (302 if who == "anonymous" else seal_reader_status(who))
    if expected == 200:
        job = VerificationJob.objects.get()
        assert f'hx-get="/audit/verify/{job.pk}"' in verify.content.decode()
        run_verification(job.pk)
        assert "Verified." in browser(user).get(f"/audit/verify/{job.pk}").content.decode()
    if seal.status_code == 200:
        assert seal.json() == exported_seal(latest_seal())


# --- what the log shows ---------------------------------------------------------


@pytest.fixture
def events(compliance_officer, auditor):
    now = timezone.now()
    record_event("decision.viewed", user=auditor, object_type="decisions.decision", object_id="7")
    record_event("decision.viewed", user=compliance_officer, object_type="decisions.decision")
    record_event("decisions.exported", user=auditor, format="csv")
    return now


def test_filters_by_actor_action_prefix_object_and_period(api_client, compliance_officer, events):
    client = api_client(compliance_officer)

    def actions(**params):
        response = client.get("/api/v1/audit/events", params)
        assert response.status_code == 200, response.json()
        return [(row["actor"], row["action"]) for row in response.json()["results"]]

    assert actions(actor="auditor") == [
        ("auditor", "decisions.exported"),
        ("auditor", "decision.viewed"),
    ]
    assert actions(action="decision.", object_id="7") == [("auditor", "decision.viewed")]
    assert actions(action="decision.viewed", object_type="decisions.decision") == [
        ("compliance_officer", "decision.viewed"),
        ("auditor", "decision.viewed"),
    ]
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    assert actions(**{"from": later}) == []
    assert len(actions(to=later, actor="auditor")) == 2


def test_bad_filters_are_named(api_client, compliance_officer, events):
    response = api_client(compliance_officer).get("/api/v1/audit/events", {"from": "yesterday"})

    assert response.status_code == 400
    assert "from" in response.json()["error"]["details"]


def test_pages_follow_older_events_by_cursor(api_client, compliance_officer, events):
    client = api_client(compliance_officer)
    first = client.get("/api/v1/audit/events", {"limit": 2}).json()
    second = client.get("/api/v1/audit/events", {"limit": 2, "cursor": first["next"]}).json()

    ids = [row["id"] for row in first["results"] + second["results"]]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids) == 4  # 3 events + the first read of the log


def test_reading_the_log_is_itself_audited(api_client, auditor, events):
    api_client(auditor).get("/api/v1/audit/events", {"actor": "auditor"})

    event = AuditEvent.objects.filter(action="audit_log.viewed").get()
    assert event.actor == auditor
    assert event.details == {"via": "api", "params": {"actor": "auditor"}}


def test_the_csv_download_holds_the_filtered_events_and_is_audited(auditor, events):
    response = browser(auditor).get("/audit/events.csv", {"actor": "auditor"})

    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    expected = AuditEvent.objects.filter(actor_name="auditor").exclude(action="audit_log.exported")
    assert [int(r["id"]) for r in rows if r["action"] != "audit_log.exported"] == list(
        expected.order_by("-id").values_list("id", flat=True)
    )
    assert {r["content_hash"] for r in rows} <= set(
        AuditEvent.objects.values_list("content_hash", flat=True)
    )
    exported = AuditEvent.objects.get(action="audit_log.exported")
    assert exported.details["params"] == {"actor": "auditor"}


def test_every_event_is_hashed_as_it_is_recorded(events):
    for event in AuditEvent.objects.all():
        assert event.content_hash == event.compute_content_hash()


def test_verification_against_an_uploaded_seal_on_the_page(compliance_officer, decision):
    seal_new_records()
    kept = json.dumps(exported_seal(latest_seal())).encode()
    upload = io.BytesIO(kept)
    upload.name = "seal.json"

    response = browser(compliance_officer).post("/audit/verify", {"seal": upload})

    job = VerificationJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/audit/?verification={job.pk}#chain"
    run_verification(job.pk)
    panel = browser(compliance_officer).get(f"/audit/verify/{job.pk}").content.decode()
    assert f"agrees with your kept seal of tree size {latest_seal().tree_size}" in panel
    bad = io.BytesIO(b"not json")
    bad.name = "seal.json"
    refused = browser(compliance_officer).post("/audit/verify", {"seal": bad})
    assert refused.status_code == 400
    assert "not JSON" in refused.content.decode()


def test_the_decision_page_shows_its_seal_and_proof(compliance_officer, decision):
    client = browser(compliance_officer)
    assert "not sealed yet" in client.get(f"/decisions/{decision.pk}/").content.decode()
    seal_new_records()

    page = client.get(f"/decisions/{decision.pk}/").content.decode()
    proof = client.get(f"/decisions/{decision.pk}/proof").content.decode()

    assert f"in seal #0 (tree size {latest_seal().tree_size}) of the log" in page
    assert "leads from this decision" in proof
    assert latest_seal().root_hash in proof
