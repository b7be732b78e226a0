"""A one-decision POST's round trips, pinned so that they do not creep back."""

from __future__ import annotations

import json

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from auditapp.accounts import revision
from auditapp.accounts.services import create_api_token
from tests.factories import DecisionPayloadFactory

URL = "/api/v1/decisions"


def statements_of_one_post(client, **fields) -> list[str]:
    body = json.dumps(DecisionPayloadFactory(**fields))
    with CaptureQueriesContext(connection) as queries:
        response = client.post(URL, body, content_type="application/json")
    assert response.status_code == 201
    assert response.json()["results"][0]["status"] == "created"
    # Inside the test's own transaction, BEGIN and COMMIT are a savepoint and its release.
    opening = {"SAVEPOINT": "BEGIN", "RELEASE": "COMMIT"}
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    return [opening.get(statement, statement) for statement in statements]


def test_a_single_decision_is_recorded_in_one_transaction_of_six_round_trips(
    model_version, ml_engineer
):
    """One transaction: the sealing lock, the decision, its pending explanation rows and
    the audit event (its lock in the same statement). The token with its user and roles,
    and the models it may ingest for, are read again only when the configuration revision
    changed (accounts/revision.py; with the embedded default's file cache, every time).
    A declined decision adds its counterfactuals' work row."""
    _, key = create_api_token(ml_engineer, scopes=["ingest"])
    client = Client(HTTP_AUTHORIZATION=f"Token {key}")
    approved, declined = {"score": 0.1, "prediction": "good"}, {"score": 0.9, "prediction": "bad"}
    statements_of_one_post(client, **approved)  # the token's first use is noted; the version kept

    statements = statements_of_one_post(client, **approved)

    reads = [] if revision.shared_cache() is not None else ["SELECT", "SELECT"]
    if connection.vendor == "postgresql":
        assert statements == [
            *reads,  # token, user, roles; the models the token may ingest for
            "BEGIN",
            "SELECT",  # the sealing lock
            "INSERT",  # the decision
            "INSERT",  # its explanation rows
            "WITH",  # the audit event, under the lock
            "COMMIT",
        ]
    else:  # SQLite: no lock (one writer at a time)
        assert [s for s in statements if s not in ("BEGIN", "COMMIT")] == [
            *reads,
            "INSERT",
            "INSERT",
            "INSERT",
        ]
    with_work_row = statements_of_one_post(client, **declined)
    assert len(with_work_row) == len(statements) + 1
    assert with_work_row.count("INSERT") == statements.count("INSERT") + 1
