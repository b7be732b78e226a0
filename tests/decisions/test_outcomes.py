"""Outcomes: POST /api/v1/outcomes and manage.py import_outcomes (append-only)."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from auditapp.accounts.models import AuditEvent
from auditapp.appendonly import AppendOnlyError
from auditapp.decisions.models import Outcome
from tests.factories import DecisionPayloadFactory

URL = "/api/v1/outcomes"


@pytest.fixture
def recorded(model_version, ingest):
    return ingest(*DecisionPayloadFactory.build_batch(3))


def yesterday() -> str:
    return (timezone.now() - timedelta(days=1)).isoformat()


def test_outcomes_are_recorded_by_request_id_or_decision_id(api_client, ml_engineer, recorded):
    response = api_client(ml_engineer).post(
        URL,
        {
            "outcomes": [
                {
                    "model": "credit",
                    "request_id": recorded[0]["request_id"],
                    "outcome": "bad",
                    "observed_at": yesterday(),
                },
                {"decision_id": recorded[1]["id"], "outcome": "good", "observed_at": yesterday()},
            ]
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert [r["status"] for r in response.json()["results"]] == ["created", "created"]
    stored = {o.decision_id: o.outcome for o in Outcome.objects.all()}
    assert stored == {recorded[0]["id"]: "bad", recorded[1]["id"]: "good"}
    assert AuditEvent.objects.get(action="outcomes.recorded").details["created"] == 2


def test_a_large_batch_by_request_id_is_one_query_not_one_condition_per_item(
    api_client, ml_engineer, model_version, ingest
):
    decisions = ingest(*DecisionPayloadFactory.build_batch(1500))
    outcomes = [
        {
            "model": "credit",
            "request_id": d["request_id"],
            "outcome": "bad",
            "observed_at": yesterday(),
        }
        for d in decisions
    ]

    response = api_client(ml_engineer).post(URL, {"outcomes": outcomes}, format="json")

    assert response.status_code == 201, response.content[:300]
    assert Outcome.objects.count() == 1500
    assert set(Outcome.objects.values_list("decision_id", flat=True)) == {
        d["id"] for d in decisions
    }


def test_unknown_decisions_and_bad_values_are_reported_and_nothing_is_stored(
    api_client, ml_engineer, recorded
):
    response = api_client(ml_engineer).post(
        URL,
        {
            "outcomes": [
                {"decision_id": recorded[0]["id"], "outcome": "good", "observed_at": yesterday()},
                {
                    "model": "credit",
                    "request_id": "never-sent",
                    "outcome": "bad",
                    "observed_at": yesterday(),
                },
                {"decision_id": recorded[1]["id"], "outcome": "maybe", "observed_at": yesterday()},
                {"decision_id": recorded[2]["id"], "outcome": "bad", "observed_at": "yesterday"},
            ]
        },
        format="json",
    )
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert [d["index"] for d in details] == [1, 2, 3]
    assert details[0]["errors"][0]["message"] == "no decision 'never-sent' of model 'credit'"
    assert details[1]["errors"][0]["field"] == "outcome"
    assert details[2]["errors"][0]["field"] == "observed_at"
    assert Outcome.objects.count() == 0


def test_the_same_outcome_sent_twice_is_a_duplicate(api_client, ml_engineer, recorded):
    body = {
        "outcomes": [
            {
                "decision_id": recorded[0]["id"],
                "outcome": "bad",
                "observed_at": "2026-11-01T00:00:00Z",
            }
        ]
    }
    api_client(ml_engineer).post(URL, body, format="json")
    again = api_client(ml_engineer).post(URL, body, format="json")
    assert again.json()["results"][0]["status"] == "duplicate"
    assert Outcome.objects.count() == 1


@pytest.mark.parametrize("who", ["compliance_officer", "auditor", "domain_expert"])
def test_roles_that_do_not_ingest_are_refused(api_client, users, recorded, who):
    response = api_client(users[who]).post(
        URL,
        {
            "outcomes": [
                {"decision_id": recorded[0]["id"], "outcome": "bad", "observed_at": yesterday()}
            ]
        },
        format="json",
    )
    assert response.status_code == 403
    assert Outcome.objects.count() == 0


def test_a_token_for_another_model_cannot_see_the_decision(token_client, ml_engineer, recorded):
    client, _ = token_client(ml_engineer, ["ingest"], models=["fraud"])
    response = client.post(
        URL,
        {
            "outcomes": [
                {"decision_id": recorded[0]["id"], "outcome": "bad", "observed_at": yesterday()}
            ]
        },
        format="json",
    )
    assert response.status_code == 400
    assert "no decision" in response.json()["error"]["details"][0]["errors"][0]["message"]


def test_outcomes_are_append_only(api_client, ml_engineer, recorded):
    api_client(ml_engineer).post(
        URL,
        {
            "outcomes": [
                {"decision_id": recorded[0]["id"], "outcome": "bad", "observed_at": yesterday()}
            ]
        },
        format="json",
    )
    outcome = Outcome.objects.get()
    outcome.outcome = "good"
    with pytest.raises(AppendOnlyError):
        outcome.save()


def test_the_decision_shows_its_outcome(api_client, ml_engineer, compliance_officer, recorded):
    api_client(ml_engineer).post(
        URL,
        {
            "outcomes": [
                {"decision_id": recorded[0]["id"], "outcome": "bad", "observed_at": yesterday()}
            ]
        },
        format="json",
    )
    body = api_client(compliance_officer).get(f"/api/v1/decisions/{recorded[0]['id']}").json()
    assert [o["outcome"] for o in body["outcomes"]] == ["bad"]
    listed = api_client(compliance_officer).get("/api/v1/decisions", {"has_outcome": "true"})
    assert [d["id"] for d in listed.json()["results"]] == [recorded[0]["id"]]
    missing = api_client(compliance_officer).get("/api/v1/decisions", {"has_outcome": "false"})
    assert len(missing.json()["results"]) == 2


def test_import_outcomes_stores_valid_rows_and_names_unknown_ones(recorded, tmp_path):
    path = tmp_path / "outcomes.csv"
    path.write_text(
        "request_id,outcome,observed_at\n"
        f"{recorded[0]['request_id']},bad,2026-11-01T00:00:00Z\n"
        "nobody,good,2026-11-01T00:00:00Z\n"
        f"{recorded[1]['request_id']},good,2026-11-02T00:00:00+00:00\n"
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 row"):
        call_command("import_outcomes", str(path), "--model", "credit", "--no-progress", stdout=out)
    assert "3 rows: 2 imported, 0 already recorded, 1 rejected." in out.getvalue()
    assert "line 3 (nobody)" in out.getvalue()
    assert Outcome.objects.count() == 2
    assert set(Outcome.objects.values_list("source", flat=True)) == {"import"}


@pytest.mark.parametrize(
    "header, named",
    [
        ("request_id,outcome,observed_at,outcome", "['outcome']"),  # csv kept the last
        ("request_id,outcome,observed_at,observed", "['observed']"),  # a column not read
    ],
    ids=["repeated", "unknown"],
)
def test_import_outcomes_refuses_a_header_it_cannot_read_as_written(
    recorded, tmp_path, header, named
):
    path = tmp_path / "outcomes.csv"
    path.write_text(f"{header}\n{recorded[0]['request_id']},bad,2026-11-01T00:00:00Z,good\n")

    with pytest.raises(CommandError, match=named.replace("[", r"\[").replace("]", r"\]")):
        call_command("import_outcomes", str(path), "--model", "credit", "--no-progress")
    assert not Outcome.objects.exists()


def test_import_outcomes_rejects_a_row_whose_cells_are_shifted(recorded, tmp_path):
    path = tmp_path / "outcomes.csv"
    path.write_text(
        "request_id,outcome,observed_at\n"
        f"{recorded[0]['request_id']},bad,2026-11-01T00:00:00Z\n"
        f"{recorded[1]['request_id']},good,2026,11-02T00:00:00Z\n"
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 row"):
        call_command("import_outcomes", str(path), "--model", "credit", "--no-progress", stdout=out)
    assert "line 3" in out.getvalue() and "has 4 cells where the header has 3" in out.getvalue()
    assert Outcome.objects.count() == 1
