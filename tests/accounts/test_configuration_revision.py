"""What an API request reads of its token, roles and models is cached per process by the
configuration revision (accounts/revision.py), and a change counts at the next request.

A change is never told to the caches directly: it only changes the revision in Redis,
which is all another process would see. So these tests, in one process, check the path a
change takes to every process. With the embedded default's file cache nothing is cached.
"""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from auditapp.accounts import revision, roles
from auditapp.accounts.services import revoke_api_token
from auditapp.registry.models import RegisteredModel
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.skipif(
    revision.shared_cache() is None, reason="caching needs the Redis cache (not the embedded one)"
)

DECISIONS = "/api/v1/decisions"


def token_reads(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if '"accounts_apitoken"' in q["sql"]]


def test_a_token_is_read_once_per_revision(token_client, compliance_officer, decision):
    client, _ = token_client(compliance_officer, ["read"])
    assert client.get(DECISIONS).status_code == 200

    with CaptureQueriesContext(connection) as queries:
        again = client.get(DECISIONS)

    assert again.status_code == 200
    assert [r["id"] for r in again.json()["results"]] == [decision.pk]
    assert token_reads(queries) == []


def test_a_revoked_token_is_refused_at_the_next_request(token_client, compliance_officer):
    client, token = token_client(compliance_officer, ["read"])
    assert client.get(DECISIONS).status_code == 200
    before = revision.current()

    revoke_api_token(token)

    assert revision.current() != before
    refused = client.get(DECISIONS)
    assert refused.status_code == 401
    assert "results" not in refused.json()


def test_a_change_made_elsewhere_counts_when_the_revision_changes(
    token_client, compliance_officer, decision
):
    """Another process's change: rows changed without this process's signals, then the
    revision set in Redis by another client, as that process's commit would."""
    client, token = token_client(compliance_officer, ["read"])
    assert client.get(DECISIONS).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_apitoken SET revoked_at = now() WHERE id = %s", [token.pk])
    assert client.get(DECISIONS).status_code == 200  # this process was not told: cached

    other = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    key = revision.shared_cache().make_and_validate_key(revision.KEY)
    other.set(key, revision.shared_cache()._cache._serializer.dumps("from-another-process"))

    assert client.get(DECISIONS).status_code == 401


def test_a_lost_revision_caches_nothing_stale(token_client, compliance_officer):
    """Redis restarted empty: a new revision, so nothing read before it counts."""
    client, token = token_client(compliance_officer, ["read"])
    assert client.get(DECISIONS).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_apitoken SET revoked_at = now() WHERE id = %s", [token.pk])
    revision.shared_cache().delete(revision.KEY)

    assert client.get(DECISIONS).status_code == 401
    assert revision.current() is not None


def test_a_removed_role_counts_at_the_next_request(token_client, compliance_officer, decision):
    client, _ = token_client(compliance_officer, ["read"])
    assert client.get(DECISIONS).status_code == 200

    compliance_officer.groups.set(Group.objects.filter(name=roles.AUDITOR))
    (shown,) = client.get(DECISIONS).json()["results"]
    assert shown["masked_features"] == ["income", "sex"]

    compliance_officer.groups.clear()
    denied = client.get(DECISIONS)
    assert denied.status_code == 403
    assert "results" not in denied.json()


def test_a_deactivated_user_is_refused_at_the_next_request(token_client, compliance_officer):
    client, _ = token_client(compliance_officer, ["read"])
    assert client.get(DECISIONS).status_code == 200

    compliance_officer.is_active = False
    compliance_officer.save(update_fields=["is_active"])

    assert client.get(DECISIONS).status_code == 401


def test_a_model_renamed_elsewhere_is_missing_at_the_next_ingestion(
    token_client, ml_engineer, model_version
):
    """Ingestion caches which of the models it names an actor may record for."""
    client, _ = token_client(ml_engineer, ["ingest"])
    first = client.post(DECISIONS, DecisionPayloadFactory(), format="json")
    assert first.status_code == 201, first.content

    RegisteredModel.objects.filter(pk=model_version.registered_model_id).update(name="renamed")
    revision.shared_cache().set(revision.KEY, "after-a-rename")  # as the other process would

    refused = client.post(DECISIONS, DecisionPayloadFactory(), format="json")
    assert refused.status_code == 400, refused.content
    assert "credit" in str(refused.json())
