"""API tokens: shown once, stored hashed, narrowed by scopes and models, refused when dead."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from auditapp.accounts.models import ApiToken, AuditEvent
from auditapp.accounts.services import AccountError, create_api_token, revoke_api_token
from auditapp.decisions.models import Decision
from tests.factories import DecisionPayloadFactory

DECISIONS = "/api/v1/decisions"


def client_with_key(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


class TestCreateTokenCommand:
    def test_it_prints_the_key_alone_on_one_line_and_stores_only_its_hash(self, ml_engineer):
        out = io.StringIO()

        call_command("create_token", "ml_engineer", "--scopes", "ingest,read", stdout=out)

        lines = out.getvalue().splitlines()
        assert len(lines) == 1
        key = lines[0]
        assert key.startswith("att_") and len(key) > 40
        token = ApiToken.objects.get(user=ml_engineer)
        assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert token.key_prefix == key[:12]
        assert token.scopes == ["ingest", "read"]
        stored = [str(value) for value in ApiToken.objects.values().get().values()]
        assert key not in stored

    def test_the_printed_key_authenticates_as_its_user(self, ml_engineer, model_version):
        out = io.StringIO()
        call_command("create_token", "ml_engineer", "--scopes", "ingest", stdout=out)

        response = client_with_key(out.getvalue().strip()).post(
            DECISIONS, DecisionPayloadFactory(), format="json"
        )

        assert response.status_code == 201
        assert Decision.objects.get().recorded_by == ml_engineer

    def test_it_applies_models_and_expiry_options(self, ml_engineer):
        call_command(
            "create_token",
            "ml_engineer",
            "--models",
            "credit, fraud",
            "--expires-days",
            "7",
            stdout=io.StringIO(),
        )

        token = ApiToken.objects.get()
        assert token.scopes == ["read"]
        assert token.model_names == ["credit", "fraud"]
        remaining = token.expires_at - timezone.now()
        assert timedelta(days=6, hours=23) < remaining <= timedelta(days=7)

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["nobody"], "No user named 'nobody'"),
            (["ml_engineer", "--scopes", "write"], "Unknown scope(s) write"),
            (["ml_engineer", "--expires-days", "0"], "positive number of days"),
        ],
    )
    def test_it_refuses_bad_arguments(self, ml_engineer, args, message):
        with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
            call_command("create_token", *args, stdout=io.StringIO())
        assert not ApiToken.objects.exists()

    def test_creating_a_token_is_audited(self, ml_engineer, admin):
        token, _ = create_api_token(ml_engineer, scopes=["ingest"], model_names=["credit"])

        event = AuditEvent.objects.get(action="token.created")
        assert event.object_type == "accounts.apitoken"
        assert event.object_id == str(token.pk)
        assert event.details == {"owner": "ml_engineer", "scopes": ["ingest"], "models": ["credit"]}


@pytest.mark.usefixtures("model_version")
class TestScopes:
    def test_an_ingest_only_token_cannot_read_decisions(self, token_client, ml_engineer, decision):
        client, _ = token_client(ml_engineer, ["ingest"])

        listed = client.get(DECISIONS)
        detail = client.get(f"{DECISIONS}/{decision.pk}")
        models = client.get("/api/v1/models")

        assert listed.status_code == detail.status_code == models.status_code == 403
        assert AuditEvent.objects.filter(action="access.denied").count() == 3

    def test_an_ingest_only_token_can_ingest(self, token_client, ml_engineer):
        client, token = token_client(ml_engineer, ["ingest"])

        response = client.post(DECISIONS, DecisionPayloadFactory(), format="json")

        assert response.status_code == 201
        decision = Decision.objects.get()
        assert decision.client == f"ml_engineer (token {token.key_prefix})"
        event = AuditEvent.objects.get(action="decisions.ingested")
        assert event.details["token"] == token.key_prefix

    def test_a_read_token_cannot_ingest(self, token_client, ml_engineer):
        client, token = token_client(ml_engineer, ["read"])

        response = client.post(DECISIONS, DecisionPayloadFactory(), format="json")

        assert response.status_code == 403
        assert not Decision.objects.exists()
        denial = AuditEvent.objects.get(action="access.denied")
        assert denial.actor == ml_engineer
        assert denial.details["token"] == token.key_prefix

    def test_a_read_token_reads_what_its_user_may(self, token_client, ml_engineer, decision):
        client, _ = token_client(ml_engineer, ["read"])

        response = client.get(DECISIONS)

        assert response.status_code == 200
        assert [d["id"] for d in response.json()["results"]] == [decision.pk]

    def test_a_token_never_exceeds_its_users_role(self, token_client, auditor):
        client, _ = token_client(auditor, ["admin"])

        response = client.post(DECISIONS, DecisionPayloadFactory(), format="json")

        assert response.status_code == 403
        assert not Decision.objects.exists()

    def test_a_read_token_of_an_auditor_still_masks_sensitive_features(
        self, token_client, auditor, decision
    ):
        client, _ = token_client(auditor, ["read"])

        shown = client.get(f"{DECISIONS}/{decision.pk}").json()

        assert shown["masked_features"] == ["income", "sex"]


@pytest.mark.usefixtures("model_version")
class TestModelRestriction:
    def test_a_token_limited_to_another_model_cannot_ingest_for_this_one(
        self, token_client, ml_engineer
    ):
        client, _ = token_client(ml_engineer, ["ingest"], models=["fraud"])

        response = client.post(DECISIONS, DecisionPayloadFactory(), format="json")

        assert response.status_code == 400
        (invalid,) = response.json()["error"]["details"]
        assert invalid["errors"] == [
            {"field": "version", "message": "unknown model or version 'credit' / '1'"}
        ]
        assert not Decision.objects.exists()

    def test_a_token_limited_to_another_model_cannot_read_this_ones_decisions(
        self, token_client, ml_engineer, decision
    ):
        client, _ = token_client(ml_engineer, ["read"], models=["fraud"])

        assert client.get(DECISIONS).json()["results"] == []
        assert client.get(f"{DECISIONS}/{decision.pk}").status_code == 404
        assert client.get("/api/v1/models/credit").status_code == 404

    def test_a_token_limited_to_this_model_works_for_it(self, token_client, ml_engineer, decision):
        client, _ = token_client(ml_engineer, ["read", "ingest"], models=["credit"])

        assert client.get(f"{DECISIONS}/{decision.pk}").status_code == 200
        assert client.post(DECISIONS, DecisionPayloadFactory(), format="json").status_code == 201


@pytest.mark.usefixtures("model_version")
class TestTokenLifetime:
    def test_an_expired_token_is_refused_with_401(self, token_client, ml_engineer):
        client, token = token_client(ml_engineer, ["read"], expires_days=1)
        ApiToken.objects.filter(pk=token.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )

        response = client.get(DECISIONS)

        assert response.status_code == 401
        assert response.json()["error"]["message"] == "Invalid, expired or revoked token."

    def test_a_token_within_its_lifetime_works(self, token_client, ml_engineer):
        client, _ = token_client(ml_engineer, ["read"], expires_days=1)

        assert client.get(DECISIONS).status_code == 200

    def test_a_revoked_token_is_refused_with_401(self, token_client, ml_engineer):
        client, token = token_client(ml_engineer, ["read"])
        assert client.get(DECISIONS).status_code == 200

        revoke_api_token(token)

        assert client.get(DECISIONS).status_code == 401
        assert AuditEvent.objects.filter(action="token.revoked", object_id=str(token.pk)).exists()

    def test_an_unknown_key_is_refused_with_401(self):
        response = client_with_key("att_not-a-key").get(DECISIONS)

        assert response.status_code == 401

    def test_a_token_of_an_inactive_user_is_refused(self, token_client, ml_engineer):
        client, _ = token_client(ml_engineer, ["read"])
        ml_engineer.is_active = False
        ml_engineer.save(update_fields=["is_active"])

        assert client.get(DECISIONS).status_code == 401

    def test_using_a_token_sets_last_used_at(self, token_client, ml_engineer):
        client, token = token_client(ml_engineer, ["read"])
        assert token.last_used_at is None
        before = timezone.now()

        client.get(DECISIONS)

        token.refresh_from_db()
        assert before <= token.last_used_at <= timezone.now()


def test_create_api_token_refuses_an_empty_scope_list(ml_engineer):
    with pytest.raises(AccountError, match="none given"):
        create_api_token(ml_engineer, scopes=[])
