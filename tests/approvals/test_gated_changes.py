"""The other gated changes: the traffic policy (put and rollback), a promotion (stage and
policy in one approval) and a production version's monitoring settings."""

from __future__ import annotations

import pytest

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.approvals.models import ApprovalStep
from auditapp.monitoring.configuration import ensure_monitoring
from auditapp.monitoring.models import AlertRule
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.registry.services import assign_models, change_stage
from auditapp.serving.models import TrafficPolicy
from tests.factories import MODEL_NAME

APPROVALS = "/api/v1/approvals"
TRAFFIC = "/api/v1/models/credit/traffic"
SETTINGS = "/api/v1/models/credit/versions/1/monitoring/settings"


@pytest.fixture
def two_versions(gated_version, register, ml_engineer, second_engineer):
    """credit v1 in production (moved before four-eyes was on) and v2 in staging."""
    model = RegisteredModel.objects.get()
    RegisteredModel.objects.filter(pk=model.pk).update(four_eyes=False)
    change_stage(roles.Actor(user=ml_engineer), gated_version, "production")
    second = register(ml_engineer, version="2")
    RegisteredModel.objects.filter(pk=model.pk).update(four_eyes=True)
    assign_models(second_engineer, [MODEL_NAME])
    return gated_version, second


def approve(client, approval: dict, **body):
    return client.post(f"{APPROVALS}/{approval['id']}/approve", body, format="json")


class TestTraffic:
    def test_a_policy_change_waits_and_is_put_in_force_by_the_approver(
        self, api_client, two_versions, ml_engineer, second_engineer
    ):
        requester = api_client(ml_engineer)
        response = requester.put(TRAFFIC, {"production": "1", "shadow": ["2"]}, format="json")

        assert response.status_code == 202, response.json()
        approval = response.json()["approval"]
        assert (approval["kind"], approval["change"]["revision"]) == ("traffic", None)
        assert not TrafficPolicy.objects.exists()

        approved = approve(api_client(second_engineer), approval)

        assert approved.status_code == 200, approved.json()
        policy = TrafficPolicy.objects.get()
        assert policy.document["shadow"] == ["2"]
        assert policy.changed_by == ml_engineer
        assert approved.json()["result"] == {"traffic_policy": policy.pk}
        event = AuditEvent.objects.get(action="model.traffic_changed")
        assert event.details["approval"] == approval["id"]
        assert requester.get(TRAFFIC).json()["shadow"] == ["2"]

    def test_a_policy_changed_meanwhile_is_a_conflict(
        self, api_client, two_versions, ml_engineer, second_engineer, admin
    ):
        first = api_client(ml_engineer).put(
            TRAFFIC, {"production": "1", "shadow": ["2"]}, format="json"
        )
        second = api_client(admin).put(TRAFFIC, {"production": "1", "shadow": []}, format="json")
        assert approve(api_client(second_engineer), second.json()["approval"]).status_code == 200

        stale = approve(api_client(second_engineer), first.json()["approval"])

        assert stale.status_code == 409
        assert stale.json()["error"]["code"] == "approval_stale"
        assert TrafficPolicy.objects.count() == 1
        assert ApprovalStep.objects.count() == 1

    def test_a_rollback_is_gated_too(self, api_client, two_versions, ml_engineer, second_engineer):
        approver = api_client(second_engineer)
        for document in ({"production": "1", "shadow": ["2"]}, {"production": "1", "shadow": []}):
            asked = api_client(ml_engineer).put(TRAFFIC, document, format="json")
            assert approve(approver, asked.json()["approval"]).status_code == 200

        response = api_client(ml_engineer).post("/api/v1/models/credit/rollback")

        assert response.status_code == 202
        assert TrafficPolicy.objects.count() == 2
        assert approve(approver, response.json()["approval"]).status_code == 200
        newest = TrafficPolicy.objects.order_by("-id").first()
        assert (newest.action, newest.document["shadow"]) == ("rollback", ["2"])


class TestPromotion:
    def test_promoting_from_the_compare_page_waits_for_one_approval_of_both_changes(
        self, api_client, client, two_versions, ml_engineer, second_engineer
    ):
        asked = api_client(ml_engineer).put(
            TRAFFIC, {"production": "1", "shadow": ["2"]}, format="json"
        )
        assert approve(api_client(second_engineer), asked.json()["approval"]).status_code == 200
        client.force_login(ml_engineer)

        response = client.post("/models/credit/compare/promote", {"a": "1", "b": "2"}, follow=True)

        assert response.status_code == 200
        assert b"waits for a second person" in response.content
        v2 = ModelVersion.objects.get(version="2")
        assert v2.stage == "staging"
        pending = api_client(second_engineer).get(APPROVALS, {"state": "pending"}).json()["results"]
        assert [a["kind"] for a in pending] == ["promote"]

        approved = approve(api_client(second_engineer), pending[0])

        assert approved.status_code == 200, approved.json()
        v2.refresh_from_db()
        assert v2.stage == "production"
        assert api_client(ml_engineer).get(TRAFFIC).json()["production"] == "2"
        history = api_client(ml_engineer).get("/api/v1/models/credit/versions/2").json()
        assert history["stage_history"][-1]["approved_by"] == "ml_engineer_2"


class TestMonitoringSettings:
    def test_a_production_versions_thresholds_wait_for_approval(
        self, api_client, two_versions, ml_engineer, second_engineer
    ):
        ensure_monitoring(two_versions[0])
        psi = AlertRule.objects.get(model_version=two_versions[0], metric="input_drift_psi")
        body = {"rules": [{"id": psi.pk, "threshold": 0.5}]}

        response = api_client(ml_engineer).put(SETTINGS, body, format="json")

        assert response.status_code == 202, response.json()
        assert response.json()["approval"]["kind"] == "thresholds"
        psi.refresh_from_db()
        assert psi.threshold != 0.5
        assert approve(api_client(second_engineer), response.json()["approval"]).status_code == 200
        psi.refresh_from_db()
        assert psi.threshold == 0.5
        event = AuditEvent.objects.get(action="monitoring.configured")
        assert (event.actor, event.details["approval"]) == (
            ml_engineer,
            response.json()["approval"]["id"],
        )

    def test_an_unchanged_form_asks_for_nothing(self, api_client, two_versions, ml_engineer):
        ensure_monitoring(two_versions[0])
        psi = AlertRule.objects.get(model_version=two_versions[0], metric="input_drift_psi")
        body = {"rules": [{"id": psi.pk, "threshold": psi.threshold}]}
        response = api_client(ml_engineer).put(SETTINGS, body, format="json")
        assert response.status_code == 200

    def test_a_staging_versions_settings_are_not_gated(self, api_client, two_versions, ml_engineer):
        url = "/api/v1/models/credit/versions/2/monitoring/settings"
        ensure_monitoring(two_versions[1])
        psi = AlertRule.objects.get(model_version=two_versions[1], metric="input_drift_psi")
        response = api_client(ml_engineer).put(
            url, {"rules": [{"id": psi.pk, "threshold": 0.5}]}, format="json"
        )
        assert response.status_code == 200
