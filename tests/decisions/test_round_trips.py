"""A one-decision POST's round trips, pinned so that they do not creep back."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from django.db import DatabaseError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from auditapp.accounts import revision
from auditapp.accounts.models import AuditEvent
from auditapp.accounts.services import create_api_token
from auditapp.decisions.models import INGESTED_EVENT, Decision
from explain.models import Explanation
from tests.factories import DecisionPayloadFactory
from tests.wire import round_trips

URL = "/api/v1/decisions"


def statements_of_one_post(client, **fields) -> tuple[list[str], int | None]:
    """The statements of one POST, and on PostgreSQL the round trips they took."""
    body = json.dumps(DecisionPayloadFactory(**fields))
    with CaptureQueriesContext(connection) as queries, wire_round_trips() as waits:
        response = client.post(URL, body, content_type="application/json")
    assert response.status_code == 201
    assert response.json()["results"][0]["status"] == "created"
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    return statements, (waits or [None])[0]


@contextmanager
def wire_round_trips():
    if connection.vendor != "postgresql":
        yield []
        return
    with round_trips() as waits:
        yield waits


@pytest.mark.django_db(transaction=True)
def test_a_single_decision_is_recorded_in_one_transaction_of_five_round_trips(
    model_version, ml_engineer
):
    """One transaction: the sealing lock and the decision's id, then the decision, its
    pending explanation rows and the audit event (its lock in the same statement), sent
    together (psycopg's pipeline mode). The token with its user and roles, and the models
    it may ingest for, are read again only when the configuration revision changed
    (accounts/revision.py; with the embedded default's file cache, every time). A declined
    decision adds its counterfactuals' work row to the same round trip."""
    _, key = create_api_token(ml_engineer, scopes=["ingest"])
    client = Client(HTTP_AUTHORIZATION=f"Token {key}")
    approved, declined = {"score": 0.1, "prediction": "good"}, {"score": 0.9, "prediction": "bad"}
    statements_of_one_post(client, **approved)  # the token's first use is noted; the version kept

    statements, waits = statements_of_one_post(client, **approved)

    reads = [] if revision.shared_cache() is not None else ["SELECT", "SELECT"]
    if connection.vendor == "postgresql":
        assert statements == [
            *reads,  # token, user, roles; the models the token may ingest for
            "BEGIN",
            "SELECT",  # the sealing lock ...
            "SELECT",  # ... and the id, which the decision's row needs for its hash's sake
            "INSERT",  # the decision
            "INSERT",  # its explanation rows
            "WITH",  # the audit event, under the lock
            "COMMIT",
        ]
        # BEGIN (psycopg waits for it), the lock and the id, the rows and the event, the
        # pipeline's end (a Sync), COMMIT
        assert waits == len(reads) + 5
    else:  # SQLite: no lock (one writer at a time)
        assert [s for s in statements if s not in ("BEGIN", "COMMIT")] == [
            *reads,
            "INSERT",
            "INSERT",
            "INSERT",
        ]
    with_work_row, waits_with_work_row = statements_of_one_post(client, **declined)
    assert len(with_work_row) == len(statements) + 1
    assert with_work_row.count("INSERT") == statements.count("INSERT") + 1
    assert waits_with_work_row == waits


def stored() -> tuple[int, int, int]:
    """Decisions, ingestion events and explanation work rows."""
    return (
        Decision.objects.count(),
        AuditEvent.objects.filter(action=INGESTED_EVENT).count(),
        Explanation.objects.count(),
    )


REFUSE_WORK_ROWS = """
CREATE FUNCTION test_refuse_work_rows() RETURNS trigger LANGUAGE plpgsql
AS $$ BEGIN RAISE EXCEPTION 'work rows refused by the test'; END $$;
CREATE TRIGGER test_refuse_work_rows BEFORE INSERT ON explain_explanation
FOR EACH STATEMENT EXECUTE FUNCTION test_refuse_work_rows();
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's pipeline")
def test_a_statement_failing_inside_the_pipeline_leaves_nothing_stored(model_version, ingest):
    """The decision's INSERT goes out, then its work rows' INSERT fails in the same
    pipeline: the error surfaces where the results are read, names its cause, and the
    whole store rolls back (no decision, no key, no event); the connection serves the
    next decision as usual."""
    before = stored()
    with connection.cursor() as cursor:
        cursor.execute(REFUSE_WORK_ROWS)
    try:
        with pytest.raises(DatabaseError, match="work rows refused by the test"):
            ingest(DecisionPayloadFactory(request_id="refused-1"))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER test_refuse_work_rows ON explain_explanation")
            cursor.execute("DROP FUNCTION test_refuse_work_rows()")
    assert stored() == before

    (again,) = ingest(DecisionPayloadFactory(request_id="refused-1"))
    assert again["status"] == "created"
    assert Decision.objects.get(pk=again["id"]).request_id == "refused-1"
    assert stored() == (before[0] + 1, before[1] + 1, before[2] + 2)
