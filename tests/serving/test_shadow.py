"""Shadow versions: scored after the answer by a real Celery worker, recorded as shadow
decisions linked to the served ones, never answered, and left out of what describes the
served model (the default search, its compliance report, notices)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import PRODUCTION, SHADOW, Decision
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.verification import verify_chain
from auditapp.reports.compliance import build_compliance_document
from auditapp.reports.periods import decisions_per_window
from auditapp.serving.services import score_shadows
from auditapp.serving.tasks import shadow_decisions
from tests.conftest import PASSWORD
from tests.serving.helpers import expected, instance, predict_url, put_policy
from tests.workers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_shadow_task_has_its_wire_name():
    assert shadow_decisions.name == "serving.shadow"


@pytest.mark.worker_queues("serving")
def test_shadow_versions_score_after_the_answer_and_are_kept_apart(
    worker, api_client, admin, ml_engineer, compliance_officer, versions, pipelines
):
    put_policy(api_client(admin), production="1", shadow=["2", "3"])
    sent = [instance(n, subject_ref=f"s-{n}") for n in range(4)]

    response = api_client(ml_engineer).post(predict_url(), {"instances": sent}, format="json")

    assert response.status_code == 200
    results = response.json()["results"]
    assert {(r["version"], r["arm"]) for r in results} == {("1", PRODUCTION)}
    served = {r["decision_id"]: item for r, item in zip(results, sent, strict=True)}
    wait_until(lambda: Decision.objects.filter(arm=SHADOW).count() == 8, "8 shadow decisions")

    shadows = Decision.objects.filter(arm=SHADOW).select_related("model_version")
    assert {(d.served_by, d.model_version.version) for d in shadows} == {
        (pk, v) for pk in served for v in ("2", "3")
    }
    for shadow in shadows:
        item = served[shadow.served_by]
        assert shadow.full_inputs() == item["inputs"] and shadow.subject_ref == item["subject_ref"]
        assert shadow.request_id == f"shadow-{shadow.model_version.version}-{shadow.served_by}"
        prediction, score = expected(pipelines[shadow.model_version.version], item["inputs"])
        assert (shadow.prediction, shadow.source) == (prediction, "serving")
        assert shadow.score == pytest.approx(score, abs=1e-12)
        assert shadow.compute_content_hash() == shadow.content_hash

    recorded = AuditEvent.objects.filter(action="decisions.ingested", actor__isnull=True)
    assert {(e.actor_name, e.details["source"]) for e in recorded} == {
        ("serving (shadow versions)", "serving")
    }
    assert sum(e.details["created"] for e in recorded) == 8
    # Sent again (a retried task), nothing is recorded twice.
    assert score_shadows(list(served), [versions["2"].pk]) == 0
    assert Decision.objects.filter(arm=SHADOW).count() == 8

    # The search: served decisions by default, shadow ones when asked for.
    reader = api_client(compliance_officer)
    found = reader.get("/api/v1/decisions?model=credit").json()["results"]
    assert sorted(r["id"] for r in found) == sorted(served)
    assert {r["arm"] for r in found} == {PRODUCTION}
    shadow_rows = reader.get("/api/v1/decisions?model=credit&arm=shadow").json()["results"]
    assert len(shadow_rows) == 8 and {r["served_by"] for r in shadow_rows} == set(served)
    assert len(reader.get("/api/v1/decisions?model=credit&arm=all").json()["results"]) == 12
    browser = Client()
    assert browser.login(username="compliance_officer", password=PASSWORD)
    shadow_link = f"/decisions/{shadow_rows[0]['id']}/"
    assert shadow_link not in browser.get("/decisions/?model=credit").content.decode()
    assert shadow_link in browser.get("/decisions/?model=credit&arm=all").content.decode()
    detail = browser.get(shadow_link).content.decode()
    assert "never told to anyone" in detail
    assert f"/decisions/{shadow_rows[0]['served_by']}/" in detail

    # Reports and figures of the shadow versions count none of them; a notice is refused.
    start, end = timezone.now() - timedelta(days=1), timezone.now() + timedelta(minutes=1)
    document = build_compliance_document(versions["2"], start, end)
    assert document["sections"]["volumes"]["decisions"] == 0
    served_document = build_compliance_document(versions["1"], start, end)
    assert served_document["sections"]["volumes"]["decisions"] == 4
    assert sum(decisions_per_window(versions["3"], "day", start, end).values()) == 0
    shadow = shadows[0]
    notice = reader.post(
        "/api/v1/reports",
        {"kind": "decision_notice", "decision_id": shadow.pk, "format": "json"},
        format="json",
    )
    assert notice.status_code == 400
    assert "shadow decision" in notice.json()["error"]["details"]["decision_id"][0]

    # Sealed and verified with the rest: the arm and the link are in their hashes.
    seal_new_records()
    verification = verify_chain()
    assert verification.ok, verification.first_bad
    assert verification.decisions == 12
