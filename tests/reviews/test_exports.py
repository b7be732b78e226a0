"""Labelled data export and the per-version oversight figures."""

from __future__ import annotations

import io
from datetime import timedelta

import pandas as pd
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from auditapp.decisions.outcomes import record_outcomes
from auditapp.reviews.models import ReviewCase
from auditapp.reviews.services import flag_decision, resolve_case, submit_feedback
from auditapp.reviews.stats import oversight_figures
from tests.factories import DecisionPayloadFactory

URL = "/api/v1/models/credit/versions/1/labelled-data"


@pytest.fixture
def labelled(model_version, ingest, ml_engineer, domain_expert):
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(6))]
    decisions = list(Decision.objects.filter(pk__in=ids).order_by("pk"))
    engineer, expert = roles.Actor(user=ml_engineer), roles.Actor(user=domain_expert)
    record_outcomes(
        engineer,
        {
            "outcomes": [
                {
                    "decision_id": decisions[0].pk,
                    "outcome": "bad",
                    "observed_at": "2026-11-01T00:00:00Z",
                },
                {
                    "decision_id": decisions[1].pk,
                    "outcome": "good",
                    "observed_at": "2026-11-01T00:00:00Z",
                },
            ]
        },
    )
    submit_feedback(expert, decisions[1], {"verdict": "agree", "explanation_rating": 5})
    submit_feedback(
        expert,
        decisions[2],
        {"verdict": "disagree", "corrected_label": "bad", "explanation_rating": 2},
    )
    case = flag_decision(expert, decisions[3], "check the income")
    resolve_case(expert, case, ReviewCase.OVERRIDDEN, outcome="good", rationale="payslips")
    submit_feedback(expert, decisions[4], {"verdict": "unsure"})  # no label: not exported
    return decisions


def read(response, fmt: str) -> pd.DataFrame:
    data = response.content
    return pd.read_csv(io.BytesIO(data)) if fmt == "csv" else pd.read_parquet(io.BytesIO(data))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_export_holds_exactly_the_labelled_decisions(api_client, ml_engineer, labelled, fmt):
    response = api_client(ml_engineer).get(URL, {"format": fmt})
    assert response.status_code == 200
    frame = read(response, fmt).set_index("decision_id")
    d0, d1, d2, d3 = labelled[:4]
    assert sorted(frame.index) == [d0.pk, d1.pk, d2.pk, d3.pk]
    assert frame.loc[d0.pk, "outcome"] == "bad"
    assert frame.loc[d1.pk, "verdicts"] == "agree"
    assert float(frame.loc[d1.pk, "explanation_ratings"]) == 5
    assert frame.loc[d2.pk, "corrected_label"] == "bad"
    assert frame.loc[d3.pk, "override_outcome"] == "good"
    for decision in labelled[:4]:
        row = frame.loc[decision.pk]
        assert row["request_id"] == decision.request_id
        assert row["prediction"] == decision.prediction
        assert row["score"] == pytest.approx(decision.score)
        assert row["age"] == decision.inputs["age"]
        assert row["loan_purpose"] == decision.inputs["loan_purpose"]
    event = AuditEvent.objects.get(action="labelled_data.exported")
    assert (event.details["format"], event.details["rows"]) == (fmt, 4)


def test_the_period_bounds_the_export(api_client, ml_engineer, labelled):
    later = (timezone.now() + timedelta(days=1)).date().isoformat()
    response = api_client(ml_engineer).get(URL, {"from": later})
    assert read(response, "csv").empty


def test_a_period_in_any_offset_is_read_in_utc_and_its_ends_in_order(
    api_client, ml_engineer, labelled
):
    """+18:04 is valid ISO-8601 that PostgreSQL refuses as an offset: once a 500 (schemathesis
    found it when the parameters were declared); read in UTC, it is a moment like any."""
    client = api_client(ml_engineer)
    response = client.get(URL, {"to": "1843-04-14T01:21:43.83+18:04"})
    assert response.status_code == 200 and read(response, "csv").empty
    swapped = client.get(URL, {"from": "2026-12-10", "to": "2026-12-01"})
    assert swapped.status_code == 400
    assert list(swapped.json()["error"]["details"]) == ["from"]
    outside = client.get(URL, {"from": "0001-01-01T00:00:00+05:00"})
    assert outside.status_code == 400


@pytest.mark.parametrize("who", ["compliance_officer", "auditor", "domain_expert"])
def test_only_model_owners_export_labelled_data(api_client, users, labelled, who):
    assert api_client(users[who]).get(URL).status_code == 403
    assert not AuditEvent.objects.filter(action="labelled_data.exported").exists()


def test_the_page_download_is_the_same_file(ml_engineer, labelled):
    browser = Client()
    browser.force_login(ml_engineer)
    page = browser.get("/models/credit/versions/1/")
    assert b"Labelled data for retraining" in page.content
    response = browser.get("/models/credit/versions/1/labelled.csv")
    assert response["Content-Disposition"].endswith('labelled.csv"')
    assert len(read(response, "csv")) == 4


def test_oversight_figures_count_what_the_experts_did(labelled, model_version):
    with CaptureQueriesContext(connection) as queries:
        figures = oversight_figures(model_version)
    assert figures.decisions == 6
    assert figures.feedback == 3 and figures.agreement_rate == pytest.approx(1 / 3)
    assert figures.reviewed == 4  # three with feedback, one resolved case
    # Counted from the reviews' side: the version page had read every decision of the
    # version joined to its reviews, 0.85 s at a million decisions.
    assert not [q for q in queries.captured_queries if "DISTINCT" in q["sql"]]
    # The flagged case was overridden; the disagreement opened a case still waiting.
    assert (figures.resolved_cases, figures.override_rate) == (1, 1.0)
    assert figures.median_hours_to_resolve is not None
    assert dict(figures.ratings) == {1: 0, 2: 1, 3: 0, 4: 0, 5: 1}
    assert figures.open_by_age == [("under a day", 1), ("1-7 days", 0), ("over a week", 0)]


def test_an_export_with_more_rows_than_it_holds_is_refused_not_cut(
    api_client, ml_engineer, labelled, monkeypatch
):
    """At the cap, the file had held its first rows and said nothing of the rest."""
    monkeypatch.setattr("auditapp.reviews.exports.MAX_ROWS", 3)

    response = api_client(ml_engineer).get(URL, {"format": "csv"})

    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "too_many_rows"
    assert "more than 3" in error["message"]
    assert not AuditEvent.objects.filter(action="labelled_data.exported").exists()
