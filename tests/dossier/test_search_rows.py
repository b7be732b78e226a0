"""The search's page as plain rows: the same answer as from Decisions, in four round trips."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from auditapp.accounts import roles
from auditapp.decisions.models import Decision
from auditapp.decisions.presenters import SUMMARY_VALUES, DecisionPresenter
from tests.factories import DecisionPayloadFactory, credit_schema

URL = "/api/v1/decisions"


@pytest.fixture
def mixed(model_version, register, ml_engineer, ingest):
    """Decisions of two versions whose schemas mask differently, and one recorded
    before commitments (no salt), and so before encryption at rest (inputs in clear)."""
    schema = credit_schema()
    for feature in schema["features"]:
        if feature["name"] == "age":
            feature["sensitive"] = True
    register(ml_engineer, version="2", schema=schema)
    ingest(*DecisionPayloadFactory.build_batch(3))
    ingest(*DecisionPayloadFactory.build_batch(3, version="2"))
    older = Decision.objects.order_by("pk").first()
    fields = {f.attname: getattr(older, f.attname) for f in Decision._meta.concrete_fields}
    del fields["id"]
    before = {
        "request_id": "before-commitments",
        "salt": None,
        "document_form": None,
        "inputs": older.full_inputs(),
        "sealed_inputs": None,
        "sensitive_tokens": None,
    }
    Decision.objects.create(**{**fields, **before})
    return list(Decision.objects.with_related().order_by("pk"))


@pytest.mark.parametrize("who", ["compliance_officer", "auditor"])
def test_a_row_is_summarised_exactly_as_its_decision(users, mixed, who):
    presenter = DecisionPresenter(roles.Actor(user=users[who]))
    rows = Decision.objects.order_by("pk").values(*SUMMARY_VALUES)

    summaries = [presenter.row_summary(row) for row in rows]

    assert summaries == [presenter.summary(decision) for decision in mixed]
    masked = {s["request_id"]: s["masked_features"] for s in summaries}
    if who == "auditor":  # v2 masks age as well; the hash of the unsalted one is withheld
        assert sorted(set(map(tuple, masked.values()))) == [
            ("age", "income", "sex"),
            ("income", "sex"),
        ]
        (unsalted,) = [s for s in summaries if s["request_id"] == "before-commitments"]
        assert unsalted["content_hash"] is None
        assert unsalted["sensitive_inputs_commitment"] is None
    else:
        assert set(map(tuple, masked.values())) == {()}


def test_a_schema_read_again_under_another_hash_masks_by_it(api_client, auditor, mixed):
    """Schemas are kept per process by version id and schema hash: a version row that
    names other content (a database restored, recreated) is read again, not remembered."""
    client = api_client(auditor)
    v1 = mixed[0].model_version
    assert all(r["masked_features"] == ["income", "sex"] for r in v1_results(client))

    schema = credit_schema()
    for feature in schema["features"]:
        feature["sensitive"] = feature["name"] == "housing"
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE registry_modelversion SET schema = %s, schema_sha256 = %s WHERE id = %s",
            [
                json.dumps(schema),
                hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest(),
                v1.pk,
            ],
        )

    assert all(r["masked_features"] == ["housing"] for r in v1_results(client))


def v1_results(client) -> list[dict]:
    results = client.get(URL, {"model": "credit", "version": "1"}).json()["results"]
    assert results
    return results


@pytest.mark.parametrize("who", ["compliance_officer", "auditor", "domain_expert"])
def test_a_plain_search_makes_four_round_trips(users, mixed, who):
    """The session, its user with their roles, the page (its model and versions joined),
    and the audit event (on PostgreSQL, with the sealing lock in the same statement)."""
    client = Client()
    client.force_login(users[who])
    client.get(URL, {"model": "credit"})  # this process reads the versions' schemas once

    with CaptureQueriesContext(connection) as queries:
        response = client.get(URL, {"model": "credit", "limit": "50"})

    assert response.status_code == 200
    assert len(response.json()["results"]) == len(mixed)
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    if connection.vendor == "postgresql":
        assert statements == ["SELECT", "SELECT", "SELECT", "WITH"]
    else:  # the event in a transaction of its own
        assert statements[:3] == ["SELECT", "SELECT", "SELECT"]
        assert [s for s in statements[3:] if s not in ("BEGIN", "COMMIT")] == ["INSERT"]
