"""The audit log: logins, logouts, failed logins, tokens, registrations; rows are append-only."""

from __future__ import annotations

import pytest

from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent
from auditapp.accounts.services import create_api_token
from auditapp.appendonly import AppendOnlyError
from tests.conftest import PASSWORD

LOGIN, LOGOUT = "/accounts/login/", "/accounts/logout/"


@pytest.mark.django_db
class TestSessions:
    def test_a_login_through_the_login_page_is_audited(self, client, compliance_officer):
        response = client.post(
            LOGIN, {"username": "compliance_officer", "password": PASSWORD}, REMOTE_ADDR="10.1.2.3"
        )

        assert response.status_code == 302
        assert response["Location"] == "/"
        event = AuditEvent.objects.get(action="auth.login")
        assert (event.actor, event.actor_name, event.ip) == (
            compliance_officer,
            "compliance_officer",
            "10.1.2.3",
        )

    def test_a_failed_login_is_audited_with_the_name_tried(self, client, compliance_officer):
        response = client.post(LOGIN, {"username": "compliance_officer", "password": "wrong"})

        assert response.status_code == 200
        assert b"did not match" in response.content
        event = AuditEvent.objects.get(action="auth.login_failed")
        assert (event.actor, event.actor_name, event.ip) == (
            None,
            "compliance_officer",
            "127.0.0.1",
        )
        assert not AuditEvent.objects.filter(action="auth.login").exists()

    def test_a_logout_is_audited(self, client, auditor):
        client.post(LOGIN, {"username": "auditor", "password": PASSWORD})

        response = client.post(LOGOUT)

        assert response.status_code == 302
        assert response["Location"] == "/accounts/login/"
        assert AuditEvent.objects.get(action="auth.logout").actor == auditor

    def test_the_login_page_renders(self, client):
        response = client.get(LOGIN)

        assert response.status_code == 200
        assert b'name="password"' in response.content

    def test_a_session_login_reaches_the_api(self, client, compliance_officer):
        client.post(LOGIN, {"username": "compliance_officer", "password": PASSWORD})

        response = client.get("/api/v1/models")

        assert response.status_code == 200


class TestRecordedActions:
    def test_creating_a_token_is_audited(self, ml_engineer):
        token, _ = create_api_token(ml_engineer, scopes=["read"])

        event = AuditEvent.objects.get(action="token.created")
        assert (event.object_type, event.object_id) == ("accounts.apitoken", str(token.pk))
        assert event.details["owner"] == "ml_engineer"

    def test_registering_a_model_version_is_audited(self, model_version, ml_engineer):
        event = AuditEvent.objects.get(action="model_version.registered")

        assert event.actor == ml_engineer
        assert (event.object_type, event.object_id) == (
            "registry.modelversion",
            str(model_version.pk),
        )
        assert event.details == {
            "model": "credit",
            "version": "1",
            "sha256": model_version.artifact_sha256,
            "format": "skops",
        }


@pytest.mark.django_db
class TestAppendOnly:
    @pytest.fixture
    def event(self):
        return record_event("test.happened", actor_name="system", note="first")

    def test_an_audit_event_cannot_be_saved_again(self, event):
        event.action = "test.rewritten"

        with pytest.raises(AppendOnlyError):
            event.save()
        assert AuditEvent.objects.get(pk=event.pk).action == "test.happened"

    def test_an_audit_event_cannot_be_deleted(self, event):
        with pytest.raises(AppendOnlyError):
            event.delete()
        assert AuditEvent.objects.filter(pk=event.pk).exists()

    def test_audit_events_cannot_be_updated_or_deleted_in_bulk(self, event):
        with pytest.raises(AppendOnlyError):
            AuditEvent.objects.filter(pk=event.pk).update(action="test.rewritten")
        with pytest.raises(AppendOnlyError):
            AuditEvent.objects.all().delete()
        assert AuditEvent.objects.get(pk=event.pk).details == {"note": "first"}
