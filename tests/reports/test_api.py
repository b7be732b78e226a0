"""The reports API and pages: the role matrix, input errors, audit events, the live list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.test import Client
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.reports import services
from auditapp.reports.models import Report
from tests.accounts.test_role_matrix import expected_status, request_as, world  # noqa: F401
from tests.conftest import EVERYONE
from tests.reports.conftest import explain, read_file

pytestmark = pytest.mark.django_db

# The period: six weeks to tomorrow, so that the report is told week by week (past 31
# days). It had started in 2020: 361 weeks of empty rows, a 62-page PDF whose layout
# took 20 s of the end-to-end test, for the same decisions of the last hour.
PERIOD_DAYS = 42


def compliance_body(**changes) -> dict:
    now = timezone.now()
    return {
        "kind": "model_compliance",
        "model": "credit",
        "version": "1",
        "from": (now - timedelta(days=PERIOD_DAYS)).isoformat(),
        "to": (now + timedelta(days=1)).isoformat(),
        "format": "json",
        **changes,
    }


def browser(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def page_status(who: str, *needed: str) -> int:
    """A page: anonymous is sent to the login page; otherwise as the API answers."""
    return 302 if who == "anonymous" else expected_status(who, *needed)


@pytest.fixture
def done_report(world, compliance_officer) -> Report:  # noqa: F811
    """A finished compliance report (JSON) about the credit model."""
    report = services.request_report(roles.Actor(user=compliance_officer), compliance_body())
    return services.generate_report(report.pk)


@pytest.fixture
def explained_decision(world):  # noqa: F811
    explain([world["decision"].pk], world["version"])
    return world["decision"]


# --- the role matrix -----------------------------------------------------------------


@pytest.mark.parametrize("who", EVERYONE)
def test_request_a_compliance_report(world, who):  # noqa: F811
    response = request_as(
        world, who, "post", "/api/v1/reports", data=compliance_body(), format="json"
    )

    expected = expected_status(who, roles.EXPORT_REPORTS, ok=202)
    assert response.status_code == expected, response.content
    requested = AuditEvent.objects.filter(action="report.requested")
    if expected == 202:
        report = Report.objects.get()
        assert response.json() == {"id": report.pk, "status_url": f"/api/v1/reports/{report.pk}"}
        assert (report.status, report.progress, report.requested_by) == (
            Report.PENDING,
            0,
            world["users"][who],
        )
        event = requested.get()
        assert (event.actor, event.object_id) == (world["users"][who], str(report.pk))
        assert event.details["model"] == "credit" and event.details["format"] == "json"
    else:
        assert not Report.objects.exists() and not requested.exists()
        assert "status_url" not in response.content.decode()


@pytest.mark.parametrize("who", EVERYONE)
def test_request_a_decision_notice(world, who, explained_decision):  # noqa: F811
    body = {"kind": "decision_notice", "decision_id": explained_decision.pk, "format": "pdf"}

    response = request_as(world, who, "post", "/api/v1/reports", data=body, format="json")

    expected = expected_status(who, *roles.EXPORT_NOTICES, ok=202)
    assert response.status_code == expected, response.content
    if expected == 202:
        report = Report.objects.get(pk=response.json()["id"])
        assert (report.kind, report.decision, report.format) == (
            "decision_notice",
            explained_decision,
            "pdf",
        )
    else:
        assert not Report.objects.exists()


@pytest.mark.parametrize("who", EVERYONE)
def test_report_status(world, who, done_report):  # noqa: F811
    response = request_as(world, who, "get", f"/api/v1/reports/{done_report.pk}")

    assert response.status_code == expected_status(who, roles.EXPORT_REPORTS)
    if response.status_code == 200:
        body = response.json()
        assert body["status"] == "done" and body["progress"] == 100
        assert body["download_url"] == f"/api/v1/reports/{done_report.pk}/download"
        assert body["sha256"] == done_report.sha256 and len(body["sha256"]) == 64
        assert body["content_sha256"] == done_report.content_sha256
    else:
        assert done_report.sha256 not in response.content.decode()


@pytest.mark.parametrize("who", EVERYONE)
def test_report_list(world, who, done_report):  # noqa: F811
    response = request_as(world, who, "get", "/api/v1/reports")

    assert response.status_code == expected_status(who, roles.EXPORT_REPORTS, scoped=False)
    if response.status_code == 200:
        assert [r["id"] for r in response.json()["results"]] == [done_report.pk]


@pytest.mark.parametrize("who", EVERYONE)
def test_report_download(world, who, done_report):  # noqa: F811
    response = request_as(world, who, "get", f"/api/v1/reports/{done_report.pk}/download")

    expected = expected_status(who, roles.EXPORT_REPORTS)
    assert response.status_code == expected
    downloaded = AuditEvent.objects.filter(action="report.downloaded")
    if expected == 200:
        assert response.content == read_file(done_report)
        assert response["Content-Type"] == "application/json"
        assert response["X-Content-SHA256"] == done_report.sha256
        event = downloaded.get()
        assert (event.actor, event.object_id) == (world["users"][who], str(done_report.pk))
        assert event.details["sha256"] == done_report.sha256
        assert event.details["via"] == "api"
    else:
        assert not downloaded.exists()
        assert done_report.content_sha256 not in response.content.decode()


@pytest.mark.parametrize("who", EVERYONE)
def test_report_pages(world, who, done_report):  # noqa: F811
    user = world["users"][who]
    expected = page_status(who, roles.EXPORT_REPORTS)

    listing = browser(user).get("/reports/")
    row = browser(user).get(f"/reports/{done_report.pk}/row")
    download = browser(user).get(f"/reports/{done_report.pk}/download")

    assert listing.status_code == row.status_code == download.status_code == expected
    if expected == 200:
        page = listing.content.decode()
        assert "Request a compliance report" in page and done_report.sha256 in page
        assert f'href="/reports/{done_report.pk}/download"' in page
        assert download.content == read_file(done_report)
        assert AuditEvent.objects.get(action="report.downloaded").details["via"] == "page"
    else:
        assert done_report.sha256 not in listing.content.decode()
        assert not AuditEvent.objects.filter(action="report.downloaded").exists()


@pytest.mark.parametrize("who", EVERYONE)
def test_decision_notice_button(world, who, explained_decision):  # noqa: F811
    user = world["users"][who]
    decision_page = browser(user).get(f"/decisions/{explained_decision.pk}/")
    response = browser(user).post(f"/decisions/{explained_decision.pk}/notice", {"format": "json"})

    may = who != "anonymous" and set(roles.EXPORT_NOTICES) <= roles.ROLE_CAPABILITIES.get(
        who, set()
    )
    if decision_page.status_code == 200:
        assert ("Decision notice" in decision_page.content.decode()) == may
    if may:
        assert response.status_code == 302 and response["Location"] == "/reports/"
        assert Report.objects.get().decision == explained_decision
    else:
        assert response.status_code == page_status(who, *roles.EXPORT_NOTICES)
        assert not Report.objects.exists()


def test_the_nav_links_to_reports_only_for_roles_that_export_them(users, model_version):
    for who in ("admin", "ml_engineer", "compliance_officer", "domain_expert", "auditor"):
        page = browser(users[who]).get("/").content.decode()
        assert ('href="/reports/"' in page) == (
            roles.EXPORT_REPORTS in roles.ROLE_CAPABILITIES[who]
        )


def test_a_report_about_a_model_outside_a_tokens_scope_is_not_found(
    world,  # noqa: F811
    done_report,
    token_client,
    compliance_officer,
):
    client, _ = token_client(compliance_officer, ["report"], models=["fraud"])

    status = client.get(f"/api/v1/reports/{done_report.pk}")
    download = client.get(f"/api/v1/reports/{done_report.pk}/download")
    listing = client.get("/api/v1/reports")
    request = client.post("/api/v1/reports", compliance_body(), format="json")
    unknown = client.post("/api/v1/reports", compliance_body(model="nosuch"), format="json")

    assert status.status_code == download.status_code == 404
    assert status.json()["error"] == {
        "code": "not_found",
        "message": f"No report {done_report.pk}.",
        "details": None,
    }
    assert listing.json()["results"] == []
    # In a request body, a model one may not see is as unknown as one that does not exist.
    assert request.status_code == unknown.status_code == 400
    assert request.json()["error"]["details"] == {"model": ["No model named 'credit'."]}
    assert unknown.json()["error"]["details"] == {"model": ["No model named 'nosuch'."]}


# --- input errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"kind": "everything"}, "kind", "unknown kind 'everything'"),
        ({"model": "nosuch"}, "model", "No model named 'nosuch'."),
        ({"version": "9"}, "version", "No version '9' of a model named 'credit'."),
        ({"from": "last week"}, "from", "'last week' is not an ISO-8601 date or time"),
        (
            {"from": "2026-01-01T00:00:00"},
            "from",
            "'2026-01-01T00:00:00' has no time zone (add Z or +00:00)",
        ),
        (
            {"from": "2026-02-01", "to": "2026-01-01"},
            "to",
            "the period is empty: from must be before to",
        ),
        (
            {"format": "docx"},
            "format",
            "'docx' is not a format of a compliance report: use one of pdf, csv, json",
        ),
        ({"to": None}, "to", "this field is required (ISO-8601, e.g. 2026-11-01T00:00:00Z)"),
    ],
)
def test_bad_compliance_requests_name_what_is_wrong(
    api_client, compliance_officer, model_version, changes, field, message
):
    response = api_client(compliance_officer).post(
        "/api/v1/reports", compliance_body(**changes), format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["details"][field] == [message]
    assert not Report.objects.exists()


def test_bad_notice_requests_name_what_is_wrong(api_client, compliance_officer, decision):
    client = api_client(compliance_officer)

    csv = client.post(
        "/api/v1/reports",
        {"kind": "decision_notice", "decision_id": decision.pk, "format": "csv"},
        format="json",
    )
    missing = client.post(
        "/api/v1/reports",
        {"kind": "decision_notice", "decision_id": decision.pk + 99, "format": "pdf"},
        format="json",
    )
    text = client.post(
        "/api/v1/reports",
        {"kind": "decision_notice", "decision_id": "one", "format": "pdf"},
        format="json",
    )

    assert csv.json()["error"]["details"] == {
        "format": ["'csv' is not a format of a decision notice: use one of pdf, json"]
    }
    assert missing.json()["error"]["details"] == {
        "decision_id": [f"No decision {decision.pk + 99}."]
    }
    assert text.json()["error"]["details"] == {"decision_id": ["must be an integer, got 'one'"]}
    assert csv.status_code == missing.status_code == text.status_code == 400


def test_a_report_not_finished_cannot_be_downloaded(api_client, compliance_officer, model_version):
    client = api_client(compliance_officer)
    report_id = client.post("/api/v1/reports", compliance_body(), format="json").json()["id"]

    status = client.get(f"/api/v1/reports/{report_id}").json()
    download = client.get(f"/api/v1/reports/{report_id}/download")

    assert (status["status"], status["progress"], status["download_url"]) == ("pending", 0, None)
    assert download.status_code == 409
    assert download.json()["error"]["code"] == "not_ready"


def test_a_stored_file_changed_on_disk_is_refused(api_client, compliance_officer, done_report):
    with open(done_report.file.path, "ab") as handle:
        handle.write(b" ")

    response = api_client(compliance_officer).get(f"/api/v1/reports/{done_report.pk}/download")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "file_changed"


# --- the page ----------------------------------------------------------------------------


def test_the_form_requests_a_report_for_whole_utc_days(compliance_officer, model_version):
    response = browser(compliance_officer).post(
        "/reports/",
        {"target": "credit:1", "from": "2026-11-01", "to": "2026-11-30", "format": "pdf"},
    )

    assert response.status_code == 302
    report = Report.objects.get()
    assert report.parameters == {
        "model": "credit",
        "version": "1",
        "from": datetime(2026, 11, 1, tzinfo=UTC).isoformat(timespec="microseconds"),
        "to": datetime(2026, 12, 1, tzinfo=UTC).isoformat(timespec="microseconds"),
    }
    assert report.format == "pdf"
    assert AuditEvent.objects.get(action="report.requested").details["via"] == "page"
    # The list words the period as the form does: the "to" day is included.
    page = browser(compliance_officer).get("/reports/").content.decode()
    assert "To (UTC day, included)" in page
    assert "1\u201330 Nov 2026 (UTC days, both included)" in page
    assert "excluded" not in page


def test_the_form_shows_what_is_wrong(compliance_officer, model_version):
    response = browser(compliance_officer).post(
        "/reports/",
        {"target": "credit:1", "from": "2026-11-30", "to": "2026-11-01", "format": "pdf"},
    )

    assert response.status_code == 400
    assert "the period is empty" in response.content.decode()
    assert not Report.objects.exists()


def test_an_unfinished_row_polls_itself_and_a_finished_one_stops(compliance_officer, done_report):
    pending = services.request_report(roles.Actor(user=compliance_officer), compliance_body())
    client = browser(compliance_officer)

    polling = client.get(f"/reports/{pending.pk}/row").content.decode()
    finished = client.get(f"/reports/{done_report.pk}/row").content.decode()

    assert 'hx-trigger="every 1s"' in polling and 'value="0"' in polling
    assert "hx-trigger" not in finished and "Download" in finished


def test_the_list_page_runs_a_fixed_number_of_queries(
    compliance_officer, done_report, django_assert_max_num_queries
):
    for _ in range(5):
        services.request_report(roles.Actor(user=compliance_officer), compliance_body())
    client = browser(compliance_officer)
    client.get("/reports/")  # warm the session

    with django_assert_max_num_queries(8):
        response = client.get("/reports/")
    assert response.content.decode().count('<tr id="report-') == 6


def test_the_json_download_is_the_stored_document(api_client, compliance_officer, done_report):
    response = api_client(compliance_officer).get(f"/api/v1/reports/{done_report.pk}/download")

    assert orjson.loads(response.content)["content_sha256"] == done_report.content_sha256
