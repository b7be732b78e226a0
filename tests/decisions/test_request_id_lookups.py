"""Decisions looked up by request_id go through the unique keys, never a scan of decisions.

On PostgreSQL the decisions are partitioned by month and (model, request_id) is unique
through a side table (auditapp/partitions.py), the only index on that pair: a lookup that
filters the decisions themselves reads every decision of the model in every month. Each
path that looks decisions up by request_id is checked here: an outcome given by
request_id, an ingestion retry, a prediction (whose retry returns the stored answer).
On SQLite the same paths must find the same decisions.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.decisions.models import Decision, request_ids_q
from auditapp.decisions.outcomes import record_outcomes
from tests.factories import MODEL_NAME, DecisionPayloadFactory

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

SIDE_TABLE = "decisions_decision_unique"


def lookups(queries) -> list[str]:
    """The statements that read decisions by request_id."""
    return [q["sql"] for q in queries if "request_id" in q["sql"] and "SELECT" in q["sql"]]


def through_the_keys(statements: list[str]) -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: the table's own unique index
    return bool(statements) and all(SIDE_TABLE in sql for sql in statements)


@pytest.fixture
def recorded(model_version, ingest):
    return ingest(*DecisionPayloadFactory.build_batch(30))


def test_the_lookup_finds_exactly_the_decisions_named(recorded, model_version):
    wanted = [recorded[3]["request_id"], recorded[17]["request_id"], "no-such-request"]
    found = Decision.objects.filter(
        request_ids_q(wanted, model_id=model_version.registered_model_id)
    )
    assert sorted(d.pk for d in found) == sorted([recorded[3]["id"], recorded[17]["id"]])
    by_name = Decision.objects.filter(request_ids_q(wanted, model_name=MODEL_NAME))
    assert sorted(d.pk for d in by_name) == sorted(d.pk for d in found)
    assert not Decision.objects.filter(request_ids_q(wanted, model_name="another-model"))


def test_an_outcome_by_request_id_finds_its_decision_through_the_keys(recorded, ml_engineer):
    observed = (timezone.now() - timedelta(minutes=1)).isoformat()
    item = {"model": MODEL_NAME, "request_id": recorded[5]["request_id"], "outcome": "bad"}
    with CaptureQueriesContext(connection) as queries:
        (result,) = record_outcomes(
            roles.Actor(user=ml_engineer), {"outcomes": [{**item, "observed_at": observed}]}
        )
    assert result["decision_id"] == recorded[5]["id"]
    assert through_the_keys(lookups(queries.captured_queries))


def test_an_ingestion_retry_finds_the_stored_decision_through_the_keys(model_version, ingest):
    payload = DecisionPayloadFactory()
    (first,) = ingest(payload)
    with CaptureQueriesContext(connection) as queries:
        (again,) = ingest(payload)
    assert (again["id"], again["status"]) == (first["id"], "duplicate")
    assert through_the_keys(lookups(queries.captured_queries))
