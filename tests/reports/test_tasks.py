"""The generation task: its wire contract, called as a worker calls it, and with a real worker."""

from __future__ import annotations

import pytest

from auditapp.accounts import roles
from auditapp.reports import services, tasks
from auditapp.reports.compliance import SECTIONS
from auditapp.reports.models import Report
from tests.factories import DecisionPayloadFactory
from tests.reports.conftest import read_file
from tests.reports.test_api import compliance_body
from tests.workers import wait_until

# embedded: a worker on the filesystem broker reads the report in SQLite's snapshot
pytestmark = pytest.mark.embedded


def test_task_names_queues_and_limits_are_a_wire_contract():
    assert tasks.generate_report.name == "reports.generate"
    assert tasks.resend_pending.name == "reports.resend_pending"
    assert tasks.QUEUE == "reports"
    assert tasks.generate_report.acks_late and tasks.generate_report.reject_on_worker_lost
    assert tasks.generate_report.soft_time_limit < tasks.generate_report.time_limit < 3600


@pytest.mark.django_db
def test_the_task_records_progress_and_the_final_failure_on_the_row(
    compliance_officer, model_version, monkeypatch
):
    actor = roles.Actor(user=compliance_officer)
    report = services.request_report(actor, compliance_body())
    seen = []
    real = services._progress
    monkeypatch.setattr(
        services,
        "_progress",
        lambda r, d, t: (real(r, d, t), seen.append(Report.objects.get(pk=r.pk).progress)),
    )

    assert tasks.generate_report.run(report.pk) == "done"
    assert seen == sorted(seen) and seen[-1] < 100 and len(seen) == len(SECTIONS)
    assert Report.objects.get(pk=report.pk).progress == 100

    broken = services.request_report(actor, compliance_body(format="pdf"))

    def fail(*args, **kwargs):
        raise RuntimeError("the PDF renderer is missing")

    monkeypatch.setattr(services.render, "render_pdf", fail)
    assert tasks.generate_report.run(broken.pk) == "failed"
    broken.refresh_from_db()
    assert (broken.status, broken.error) == ("failed", "RuntimeError: the PDF renderer is missing")
    assert broken.finished_at is not None and not broken.file


@pytest.mark.django_db
def test_a_report_already_done_is_not_generated_again(compliance_officer, model_version):
    report = services.request_report(roles.Actor(user=compliance_officer), compliance_body())
    done = services.generate_report(report.pk)

    again = services.generate_report(report.pk)

    assert (again.sha256, again.file.name, again.finished_at) == (
        done.sha256,
        done.file.name,
        done.finished_at,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker_queues(tasks.QUEUE)
def test_a_real_worker_generates_a_requested_report_end_to_end(
    worker, model_version, ingest, api_client, compliance_officer
):
    ingest(*DecisionPayloadFactory.build_batch(20))
    client = api_client(compliance_officer)
    answer = client.post("/api/v1/reports", compliance_body(format="pdf"), format="json")
    assert answer.status_code == 202
    status_url = answer.json()["status_url"]

    wait_until(
        lambda: client.get(status_url).json()["status"] in ("done", "failed"),
        "the worker to generate the report",
    )

    status = client.get(status_url).json()
    assert (status["status"], status["progress"], status["error"]) == ("done", 100, None), (
        worker.log.read_text()[-3000:]
    )
    download = client.get(status["download_url"])
    assert download.status_code == 200 and download.content.startswith(b"%PDF-")
    report = Report.objects.get(pk=answer.json()["id"])
    assert download.content == read_file(report)
    assert __import__("hashlib").sha256(download.content).hexdigest() == status["sha256"]
    # A worker of the reports queue alone starts without the explainers.
    assert not worker.has_mapped("shap/_cext")
