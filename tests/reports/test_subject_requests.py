"""A person's data rights (issue 20): access and erasure requests through the API and the
page, with role checks and audit events; after an erasure the value is nowhere (the
database as pg_dump writes it, pages, API, exports, the access report) and verify_chain
still passes.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from django.db import connection
from django.test import Client

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.decisions import holds
from auditapp.decisions.models import Decision, Erasure, RetentionPolicy
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.verification import verify_chain
from auditapp.reports.models import SubjectRequest
from explain import batches, counterfactual_batches
from explain.models import CounterfactualResult, CounterfactualWork, ExplanationResult
from tests.factories import DecisionPayloadFactory, applicant_inputs

pytestmark = pytest.mark.django_db
SUBJECT = "c-erase-me"
# Distinctive values: the sensitive income and the non-sensitive loan amount.
INCOME, LOAN = 7318264.59, 98765.43
TRACES = ("7318264", "7,318,264", "98765.43", "98,765")
URL = "/api/v1/subject-requests"


def record_subject(ingest, count: int = 2, **fields) -> list[int]:
    """`count` decisions about SUBJECT (and one about someone else); `fields` fix more of
    theirs (a factory's sequence otherwise decides, e.g., whether they are adverse)."""
    items = []
    for n in range(count):
        inputs = applicant_inputs(n) | {"income": INCOME, "loan_amount": LOAN}
        items.append(DecisionPayloadFactory(subject_ref=SUBJECT, inputs=inputs, **fields))
    items.append(DecisionPayloadFactory(subject_ref="c-someone-else"))
    return [r["id"] for r in ingest(*items)][:count]


def file(client, kind: str, subject: str = SUBJECT, reason: str = "the subject wrote"):
    return client.post(URL, {"subject_ref": subject, "kind": kind, "reason": reason}, format="json")


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("compliance_officer", 202),
        ("admin", 202),
        ("auditor", 403),
        ("ml_engineer", 403),
        ("domain_expert", 403),
        ("no_role", 403),
        ("anonymous", 401),
    ],
)
def test_only_compliance_officers_and_admins_file_requests(
    who, status, users, model_version, ingest, api_client
):
    record_subject(ingest)
    response = file(api_client(users[who]), "erasure")
    assert response.status_code == status
    erased = Decision.objects.filter(subject_ref=SUBJECT, kept_commitments__isnull=False)
    if status == 202:
        body = response.json()
        assert body["status"] == "done" and body["result"]["erased"] == 2
        assert erased.count() == 2
        assert AuditEvent.objects.filter(action="subject_request.filed").count() == 1
    else:
        assert SubjectRequest.objects.count() == 0 and not erased.exists()
        assert not AuditEvent.objects.filter(action="subject_request.filed").exists()


def test_the_access_report_lists_every_decision_masked_for_auditors(
    model_version, ingest, api_client, compliance_officer, auditor, ml_engineer
):
    ids = record_subject(ingest)
    filed = file(api_client(compliance_officer), "access").json()
    assert filed["status"] == "done" and filed["result"] == {"decisions": 2}
    report = api_client(compliance_officer).get(f"{URL}/{filed['id']}/report.json")
    assert report.status_code == 200
    document = report.json()["document"]
    assert [d["decision_id"] for d in document["decisions"]] == ids
    first = document["decisions"][0]
    assert first["inputs"]["income"] == INCOME and first["inputs"]["loan_amount"] == LOAN
    assert first["model"] == "credit" and first["version"] == model_version.version
    assert first["reviews"] == [] and first["inputs_erased"] is False
    masked = api_client(auditor).get(f"{URL}/{filed['id']}/report.json").json()["document"]
    assert masked["inputs_masked"] is True
    assert masked["decisions"][0]["inputs"]["income"] == "[masked]"
    assert masked["decisions"][0]["inputs"]["loan_amount"] == LOAN
    pdf = api_client(compliance_officer).get(f"{URL}/{filed['id']}/report.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert api_client(ml_engineer).get(f"{URL}/{filed['id']}/report.json").status_code == 403
    downloads = AuditEvent.objects.filter(action="subject_request.downloaded")
    assert downloads.count() == 3


def test_an_erasure_a_hold_covers_is_refused_whole(
    model_version, ingest, api_client, compliance_officer
):
    ids = record_subject(ingest)
    holds.place_hold(
        roles.Actor(user=compliance_officer),
        {"subject_ref": SUBJECT, "from": "2020-01-01T00:00:00Z", "reason": "litigation"},
    )
    body = file(api_client(compliance_officer), "erasure").json()
    assert body["status"] == "refused"
    assert "legal hold" in body["refusal"] and body["result"]["erased"] == 0
    assert not Decision.objects.filter(pk__in=ids, kept_commitments__isnull=False).exists()
    assert Erasure.objects.count() == 0


def test_an_erasure_a_retention_duty_forbids_is_refused(
    model_version, ingest, api_client, compliance_officer
):
    record_subject(ingest)
    RetentionPolicy.objects.create(registered_model=model_version.registered_model, duty_days=760)
    body = file(api_client(compliance_officer), "erasure").json()
    assert body["status"] == "refused" and "retention duty" in body["refusal"]
    assert Erasure.objects.count() == 0


def test_the_privacy_page_files_and_lists_requests(
    model_version, ingest, compliance_officer, auditor, domain_expert
):
    record_subject(ingest)
    client = Client()
    client.force_login(compliance_officer)
    response = client.post(
        "/privacy/", {"subject_ref": SUBJECT, "kind": "access", "reason": "letter of 3 Dec"}
    )
    assert response.status_code == 200 and b"done" in response.content
    request = SubjectRequest.objects.get()
    reader = Client()
    reader.force_login(auditor)
    page = reader.get("/privacy/")
    assert page.status_code == 200 and SUBJECT.encode() in page.content
    assert b"File a subject request" not in page.content  # auditors read only
    assert reader.get(f"/privacy/requests/{request.pk}/report.json").status_code == 200
    outsider = Client()
    outsider.force_login(domain_expert)
    assert outsider.get("/privacy/").status_code == 403


def test_an_erasure_deletes_counterfactuals_and_notices_files(
    model_version, ingest, api_client, compliance_officer
):
    """Copies of the inputs: the counterfactual results (deleted, the work row failed) and
    explanation results (attributions only: kept)."""
    # Adverse, so that counterfactuals are computed for them, whatever ran before.
    ids = record_subject(ingest, prediction="bad", score=0.81)
    batches.run_batch(model_version.pk, "shap", ids)
    counterfactual_batches.run_batch(model_version.pk, ids)
    assert CounterfactualResult.objects.filter(decision_id__in=ids).exists()
    seal_new_records()
    body = file(api_client(compliance_officer), "erasure").json()
    assert body["status"] == "done", body["refusal"]
    assert body["result"]["copies_erased"]["counterfactual results"] >= 1
    assert not CounterfactualResult.objects.filter(decision_id__in=ids).exists()
    work = CounterfactualWork.objects.filter(decision_id__in=ids)
    assert all(w.status == CounterfactualWork.FAILED and "erased" in w.error for w in work)
    assert ExplanationResult.objects.filter(decision_id__in=ids).count() == 2
    seal_new_records()
    assert verify_chain().ok


def found_in(text: str) -> list[str]:
    return [trace for trace in TRACES if trace in text]


def pg_dump() -> str:
    settings = connection.settings_dict
    command = [shutil.which("pg_dump") or "pg_dump", "--data-only", "-d", settings["NAME"]]
    command += ["-h", settings["HOST"] or "127.0.0.1", "-U", settings["USER"] or "postgres"]
    if settings.get("PORT"):
        command += ["-p", str(settings["PORT"])]
    env = {"PGPASSWORD": settings.get("PASSWORD") or ""}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return done.stdout


def everywhere(client, ids: list[int], access_id: int) -> str:
    """The decision pages, the API's JSON, the search and its CSV export, the access report."""
    parts = []
    for pk in ids:
        parts.append(client.get(f"/decisions/{pk}/").content.decode())
        parts.append(client.get(f"/api/v1/decisions/{pk}").content.decode())
    parts.append(client.get(f"/api/v1/decisions?subject_ref={SUBJECT}").content.decode())
    parts.append(client.get(f"/decisions/?subject_ref={SUBJECT}").content.decode())
    export = client.get(f"/decisions/export.csv?subject_ref={SUBJECT}")
    parts.append(b"".join(export.streaming_content).decode())
    parts.append(client.get(f"{URL}/{access_id}/report.json").content.decode())
    return "\n".join(parts)


@pytest.mark.django_db(transaction=True)
def test_after_an_erasure_the_value_is_nowhere_and_the_chain_verifies(
    model_version, ingest, compliance_officer
):
    ids = record_subject(ingest)
    seal_new_records()
    client = Client()
    client.force_login(compliance_officer)
    access = client.post(
        URL, {"subject_ref": SUBJECT, "kind": "access", "reason": "r"}, "application/json"
    ).json()
    assert found_in(everywhere(client, ids, access["id"]))  # the check can see them
    dump_before = connection.vendor == "postgresql" and found_in(pg_dump())
    if connection.vendor == "postgresql":
        assert dump_before

    erased = client.post(
        URL,
        json.dumps({"subject_ref": SUBJECT, "kind": "erasure", "reason": "Art. 17"}),
        content_type="application/json",
    )
    assert erased.status_code == 202 and erased.json()["result"]["erased"] == 2

    assert found_in(everywhere(client, ids, access["id"])) == []
    if connection.vendor == "postgresql":
        assert found_in(pg_dump()) == []
    report = client.get(f"{URL}/{access['id']}/report.json").json()["document"]
    assert all(d["inputs_erased"] and d["inputs"] == {} for d in report["decisions"])
    seal_new_records()
    result = verify_chain()
    assert result.ok, result.first_bad
    assert result.decisions == 3 and result.records.get("erasure") == 1


def test_a_request_about_a_subject_a_hidden_model_decided_is_missing_to_a_narrowed_token(
    model_version, register, ingest, admin, api_client, token_client, compliance_officer, auditor
):
    """An auditor's token narrowed to credit (`--models credit`) read a request about a
    subject the hidden model fraud had also decided: its decision count, the holds and
    the refusal naming fraud. Now such a request is as missing to it; one about subjects
    only its models decided it still reads."""
    register(admin, name="fraud")
    ingest(
        DecisionPayloadFactory(subject_ref=SUBJECT),
        DecisionPayloadFactory(subject_ref=SUBJECT, model="fraud"),
        DecisionPayloadFactory(subject_ref="c-credit-only"),
        DecisionPayloadFactory(subject_ref=None, model="fraud"),  # about no one
        user=admin,
    )
    both = file(api_client(compliance_officer), "access").json()
    credit_only = file(api_client(compliance_officer), "access", "c-credit-only").json()
    narrowed, _ = token_client(auditor, ["read"], models=["credit"])

    listed = narrowed.get(URL).json()["results"]
    assert [r["id"] for r in listed] == [credit_only["id"]]
    missing = narrowed.get(f"{URL}/99999")
    for url in (f"{URL}/{both['id']}", f"{URL}/{both['id']}/report.json"):
        response = narrowed.get(url)
        assert response.status_code == missing.status_code == 404, url
    assert narrowed.get(f"{URL}/{credit_only['id']}").status_code == 200
    full, _ = token_client(auditor, ["read"])
    assert full.get(f"{URL}/{both['id']}").json()["result"] == {"decisions": 2}


@pytest.mark.parametrize(
    "subject",
    ["c-\u200berase", "c-\u202eerase", "c-\x01erase"],
    ids=["zero_width_space", "bidi_override", "control"],
)
def test_a_subject_ref_no_decision_can_have_is_refused_by_name(
    model_version, ingest, api_client, compliance_officer, subject
):
    """Ingestion refuses invisible and control characters in subject_ref, so a request (or
    a hold) naming one matched nothing: an erasure pasted with a zero-width space answered
    "done", 0 decisions, the person's inputs all still there."""
    record_subject(ingest)
    client = api_client(compliance_officer)

    for kind in ("access", "erasure"):
        response = file(client, kind, subject)
        assert response.status_code == 400, response.json()
        assert list(response.json()["error"]["details"]) == ["subject_ref"]
    held = client.post(
        "/api/v1/legal-holds", {"subject_ref": subject, "reason": "r"}, format="json"
    )
    assert held.status_code == 400 and "subject_ref" in held.json()["error"]["details"]
    blank = client.post("/api/v1/legal-holds", {"subject_ref": "   ", "reason": "r"}, format="json")
    assert blank.status_code == 400 and "subject_ref" in blank.json()["error"]["details"]
    assert not SubjectRequest.objects.exists()
    assert not Decision.objects.filter(kept_commitments__isnull=False).exists()


def test_counterfactuals_computed_while_the_decision_is_erased_are_not_stored(
    model_version, ingest, api_client, compliance_officer, monkeypatch
):
    """A worker that read the inputs before an erasure stored its result after it: the
    erasure had deleted the copies and failed the work row, and then a new result holding
    the person's inputs and the changed ones was written, and stayed."""
    ids = record_subject(ingest, prediction="bad", score=0.81)
    batches.run_batch(model_version.pk, "shap", ids)
    seal_new_records()
    real_store = counterfactual_batches.store

    def erased_meanwhile(version, computed):
        body = file(api_client(compliance_officer), "erasure").json()
        assert body["status"] == "done", body["refusal"]
        return real_store(version, computed)

    monkeypatch.setattr(counterfactual_batches, "store", erased_meanwhile)
    counterfactual_batches.run_batch(model_version.pk, ids)

    assert not CounterfactualResult.objects.filter(decision_id__in=ids).exists()
    work = CounterfactualWork.objects.filter(decision_id__in=ids)
    assert work and all(w.status == CounterfactualWork.FAILED and "erased" in w.error for w in work)


def test_a_notice_generated_while_the_decision_is_erased_keeps_no_file(
    model_version, ingest, api_client, compliance_officer, generate, monkeypatch
):
    """A notice built from the inputs before an erasure stored its file after it, and set
    itself done: the erasure had failed the row, and the file with the person's values
    was then written, downloadable."""
    from pathlib import Path

    from django.conf import settings

    from auditapp.reports import services
    from auditapp.reports.models import Report

    ids = record_subject(ingest, prediction="bad", score=0.81)
    batches.run_batch(model_version.pk, "shap", ids)
    seal_new_records()
    real_store = services._store

    def erased_meanwhile(report, content, digest):
        body = file(api_client(compliance_officer), "erasure").json()
        assert body["status"] == "done", body["refusal"]
        return real_store(report, content, digest)

    monkeypatch.setattr(services, "_store", erased_meanwhile)
    report = generate({"kind": "decision_notice", "decision_id": ids[0], "format": "json"})

    report.refresh_from_db()
    assert report.status == Report.FAILED and not report.file
    assert "erased" in report.error
    media = Path(settings.MEDIA_ROOT)
    files = [p for p in media.rglob("*") if p.is_file()]
    assert not [p for p in files if found_in(p.read_bytes().decode("latin-1"))]
    download = api_client(compliance_officer).get(f"/api/v1/reports/{report.pk}/download")
    assert download.status_code == 409
