"""Four-eyes through the API: a gated change waits (202), a second person approves it and
it is applied; the requester never decides their own request, even as admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent, LogRecord
from auditapp.approvals.models import Approval, ApprovalStep
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.verification import verify_chain
from auditapp.registry.models import ModelVersion, RegisteredModel, StageChange
from auditapp.registry.services import change_stage

STAGE_URL = "/api/v1/models/credit/versions/1/stage"
APPROVALS = "/api/v1/approvals"


def ask_production(client) -> dict:
    response = client.post(STAGE_URL, {"stage": "production"}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()["approval"]


class TestTheTwoPersonFlow:
    def test_a_stage_change_to_production_waits_then_applies_when_another_approves(
        self, api_client, gated_version, ml_engineer, second_engineer
    ):
        requester, approver = api_client(ml_engineer), api_client(second_engineer)

        approval = ask_production(requester)

        assert approval["state"] == "pending"
        assert approval["kind"] == "stage"
        assert approval["requested_by"] == "ml_engineer"
        assert approval["change"] == {"from": "staging", "to": "production"}
        gated_version.refresh_from_db()
        assert gated_version.stage == "staging"  # nothing changed yet
        assert not StageChange.objects.filter(to_stage="production").exists()
        pending = approver.get(APPROVALS, {"state": "pending"}).json()["results"]
        assert [a["id"] for a in pending] == [approval["id"]]

        response = approver.post(
            f"{APPROVALS}/{approval['id']}/approve", {"comment": "metrics ok"}, format="json"
        )

        assert response.status_code == 200, response.json()
        body = response.json()
        assert (body["state"], body["decided_by"], body["comment"]) == (
            "approved",
            "ml_engineer_2",
            "metrics ok",
        )
        gated_version.refresh_from_db()
        assert gated_version.stage == "production"
        change = StageChange.objects.get(to_stage="production")
        assert (change.from_stage, change.to_stage, change.changed_by) == (
            "staging",
            "production",
            ml_engineer,
        )
        assert body["result"] == {"stage_change": change.pk}
        history = requester.get("/api/v1/models/credit/versions/1").json()["stage_history"]
        assert [(h["to"], h["by"], h["approval"], h["approved_by"]) for h in history] == [
            ("staging", "ml_engineer", None, None),  # registered
            ("production", "ml_engineer", approval["id"], "ml_engineer_2"),
        ]
        assert approver.get(APPROVALS, {"state": "pending"}).json()["results"] == []
        assert [
            a["id"] for a in approver.get(APPROVALS, {"state": "approved"}).json()["results"]
        ] == [approval["id"]]

    def test_each_step_is_audited_and_sealed(
        self, api_client, gated_version, ml_engineer, second_engineer
    ):
        approval = ask_production(api_client(ml_engineer))
        api_client(second_engineer).post(f"{APPROVALS}/{approval['id']}/approve", {}, format="json")

        events = {
            e.action: e
            for e in AuditEvent.objects.filter(
                action__in=[
                    "approval.requested",
                    "approval.approved",
                    "model_version.stage_changed",
                ]
            )
        }
        assert events["approval.requested"].actor == ml_engineer
        assert events["approval.requested"].model == "credit"
        assert events["approval.approved"].actor == second_engineer
        assert events["approval.approved"].details["requested_by"] == "ml_engineer"
        assert events["model_version.stage_changed"].details["approval"] == approval["id"]
        assert events["approval.approved"].at >= events["approval.requested"].at
        step = ApprovalStep.objects.get()
        assert LogRecord.objects.filter(kind="approval", object_id=approval["id"]).count() == 1
        assert LogRecord.objects.filter(kind="approval_step", object_id=step.pk).count() == 1
        seal_new_records()
        result = verify_chain()
        assert result.ok, result.first_bad

    def test_a_compliance_officer_may_approve(
        self, api_client, gated_version, ml_engineer, compliance_officer
    ):
        approval = ask_production(api_client(ml_engineer))
        response = api_client(compliance_officer).post(
            f"{APPROVALS}/{approval['id']}/approve", {}, format="json"
        )
        assert response.status_code == 200, response.json()
        gated_version.refresh_from_db()
        assert gated_version.stage == "production"

    def test_a_rejection_needs_a_comment_and_changes_nothing(
        self, api_client, gated_version, ml_engineer, second_engineer
    ):
        approval = ask_production(api_client(ml_engineer))
        approver = api_client(second_engineer)
        url = f"{APPROVALS}/{approval['id']}/reject"

        refused = approver.post(url, {}, format="json")
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "comment_required"

        response = approver.post(url, {"comment": "wait for the audit"}, format="json")

        assert response.status_code == 200
        assert (response.json()["state"], response.json()["comment"]) == (
            "rejected",
            "wait for the audit",
        )
        gated_version.refresh_from_db()
        assert gated_version.stage == "staging"
        assert not StageChange.objects.filter(to_stage="production").exists()
        again = approver.post(f"{APPROVALS}/{approval['id']}/approve", {}, format="json")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "approval_decided"

    @pytest.mark.parametrize(
        "body", [["metrics ok"], "metrics ok", 1], ids=["list", "text", "number"]
    )
    @pytest.mark.parametrize("action", ["approve", "reject"])
    def test_a_decision_whose_body_is_not_an_object_is_refused_and_changes_nothing(
        self, api_client, gated_version, ml_engineer, second_engineer, body, action
    ):
        """["metrics ok"] to /approve approved the change and applied it, its comment lost."""
        approval = ask_production(api_client(ml_engineer))

        response = api_client(second_engineer).post(
            f"{APPROVALS}/{approval['id']}/{action}", body, format="json"
        )

        assert response.status_code == 400, response.json()
        assert not ApprovalStep.objects.exists()
        gated_version.refresh_from_db()
        assert gated_version.stage == "staging"


class TestWhoMayDecide:
    @pytest.mark.parametrize("decision", ["approve", "reject"])
    def test_the_requester_cannot_decide_even_as_admin(
        self, api_client, gated_version, admin, decision
    ):
        client = api_client(admin)
        approval = ask_production(client)

        response = client.post(
            f"{APPROVALS}/{approval['id']}/{decision}", {"comment": "me"}, format="json"
        )

        assert response.status_code == 403
        assert response.json()["error"]["code"] == "own_request"
        gated_version.refresh_from_db()
        assert gated_version.stage == "staging"
        assert not ApprovalStep.objects.exists()
        denial = AuditEvent.objects.get(action="access.denied")
        assert denial.actor == admin

    @pytest.mark.parametrize("who", ["domain_expert", "auditor"])
    def test_a_role_that_may_not_make_the_change_gets_403(
        self, api_client, users, gated_version, ml_engineer, who
    ):
        approval = ask_production(api_client(ml_engineer))

        response = api_client(users[who]).post(
            f"{APPROVALS}/{approval['id']}/approve", {}, format="json"
        )

        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
        gated_version.refresh_from_db()
        assert gated_version.stage == "staging"

    def test_a_hidden_models_approvals_are_missing(
        self, api_client, gated_version, ml_engineer, outsider, role_groups
    ):
        approval = ask_production(api_client(ml_engineer))
        client = api_client(outsider)

        assert client.get(APPROVALS).json()["results"] == []
        for response in (
            client.get(f"{APPROVALS}/{approval['id']}"),
            client.post(f"{APPROVALS}/{approval['id']}/approve", {}, format="json"),
            client.get(f"{APPROVALS}/999999"),
        ):
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"

    def test_anonymous_gets_401(self, api_client, gated_version):
        assert api_client().get(APPROVALS).status_code in (401, 403)

    def test_a_read_token_cannot_approve_and_an_admin_token_can(
        self, api_client, token_client, gated_version, ml_engineer, second_engineer
    ):
        approval = ask_production(api_client(ml_engineer))
        read_client, _ = token_client(second_engineer, ["read"])
        admin_client, _ = token_client(second_engineer, ["admin"])
        url = f"{APPROVALS}/{approval['id']}/approve"

        assert read_client.get(APPROVALS).status_code == 200
        assert read_client.post(url, {}, format="json").status_code == 403
        assert admin_client.post(url, {}, format="json").status_code == 200


class TestExpiryAndConflicts:
    def test_an_expired_approval_cannot_be_approved(
        self, api_client, gated_version, ml_engineer, second_engineer, settings
    ):
        settings.ATTEST_APPROVAL_TTL_DAYS = 0  # expires as it is made
        approval = ask_production(api_client(ml_engineer))
        approver = api_client(second_engineer)

        assert approver.get(f"{APPROVALS}/{approval['id']}").json()["state"] == "expired"
        response = approver.post(f"{APPROVALS}/{approval['id']}/approve", {}, format="json")

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "approval_expired"
        gated_version.refresh_from_db()
        assert gated_version.stage == "staging"
        listed = approver.get(APPROVALS, {"state": "expired"}).json()["results"]
        assert [a["id"] for a in listed] == [approval["id"]]

    def test_the_default_expiry_is_seven_days(self, api_client, gated_version, ml_engineer):
        approval = Approval.objects.get(pk=ask_production(api_client(ml_engineer))["id"])
        assert approval.expires_at - approval.requested_at == timedelta(days=7)
        assert approval.expires_at > timezone.now()

    def test_a_stage_that_moved_meanwhile_is_a_conflict_and_nothing_is_applied(
        self, api_client, gated_version, ml_engineer, second_engineer
    ):
        approval = ask_production(api_client(ml_engineer))
        # Archived meanwhile (staging -> archived does not touch production: not gated).
        change_stage(roles.Actor(user=second_engineer), gated_version, "archived")

        response = api_client(second_engineer).post(
            f"{APPROVALS}/{approval['id']}/approve", {}, format="json"
        )

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "approval_stale"
        gated_version.refresh_from_db()
        assert gated_version.stage == "archived"
        assert list(StageChange.objects.values_list("to_stage", flat=True)) == [
            "staging",
            "archived",
        ]
        assert not ApprovalStep.objects.exists()
        assert Approval.objects.with_state().get().state == "pending"

    def test_an_unknown_state_filter_is_refused(self, api_client, gated_version, ml_engineer):
        response = api_client(ml_engineer).get(APPROVALS, {"state": "done"})
        assert response.status_code == 400


class TestWhatIsGated:
    def test_a_change_not_touching_production_is_not_gated(
        self, api_client, gated_version, ml_engineer
    ):
        response = api_client(ml_engineer).post(STAGE_URL, {"stage": "archived"}, format="json")
        assert response.status_code == 200
        assert response.json()["stage"] == "archived"

    def test_leaving_production_is_gated(
        self, api_client, gated_version, ml_engineer, second_engineer
    ):
        model = RegisteredModel.objects.get()
        RegisteredModel.objects.filter(pk=model.pk).update(four_eyes=False)
        change_stage(roles.Actor(user=ml_engineer), gated_version, "production")
        RegisteredModel.objects.filter(pk=model.pk).update(four_eyes=True)

        response = api_client(ml_engineer).post(STAGE_URL, {"stage": "archived"}, format="json")

        assert response.status_code == 202
        assert response.json()["approval"]["change"] == {"from": "production", "to": "archived"}
        assert ModelVersion.objects.get().stage == "production"

    def test_without_four_eyes_a_stage_change_answers_200(
        self, api_client, model_version, ml_engineer
    ):
        assert RegisteredModel.objects.get().four_eyes is False  # the test settings' default
        response = api_client(ml_engineer).post(STAGE_URL, {"stage": "production"}, format="json")
        assert response.status_code == 200
        assert response.json()["stage"] == "production"

    def test_turning_four_eyes_off_needs_a_second_person(
        self, api_client, gated_version, ml_engineer, second_engineer
    ):
        url = "/api/v1/models/credit/four-eyes"
        response = api_client(ml_engineer).put(url, {"enabled": False}, format="json")
        assert response.status_code == 202
        assert RegisteredModel.objects.get().four_eyes is True
        assert api_client(ml_engineer).get("/api/v1/models/credit").json()["four_eyes"] is True

        approved = api_client(second_engineer).post(
            f"{APPROVALS}/{response.json()['approval']['id']}/approve", {}, format="json"
        )

        assert approved.status_code == 200
        assert RegisteredModel.objects.get().four_eyes is False
        event = AuditEvent.objects.get(action="model.four_eyes_changed", details__four_eyes=False)
        assert event.actor == ml_engineer
        # on again, at once
        on = api_client(second_engineer).put(url, {"enabled": True}, format="json")
        assert (on.status_code, on.json()["four_eyes"]) == (200, True)

    def test_a_new_model_starts_under_four_eyes_outside_the_tests(
        self, register, ml_engineer, settings
    ):
        settings.ATTEST_FOUR_EYES_NEW_MODELS = True
        register(ml_engineer, name="fresh")
        assert RegisteredModel.objects.get(name="fresh").four_eyes is True


def test_a_requester_who_lost_the_right_makes_the_approval_a_conflict(
    api_client, gated_version, ml_engineer, second_engineer
):
    approval = ask_production(api_client(ml_engineer))
    ml_engineer.groups.clear()

    response = api_client(second_engineer).post(
        f"{APPROVALS}/{approval['id']}/approve", {}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "requester_not_allowed"
    assert ModelVersion.objects.get().stage == "staging"
    assert not ApprovalStep.objects.exists()


def test_a_requester_no_longer_assigned_to_the_model_makes_the_approval_a_conflict(
    api_client, gated_version, ml_engineer, second_engineer
):
    """The change is made as the requester's; one taken off the model (who now gets a 404
    for it) had it applied all the same: only their role was re-checked."""
    approval = ask_production(api_client(ml_engineer))
    gated_version.registered_model.assignees.remove(ml_engineer)
    assert api_client(ml_engineer).get("/api/v1/models/credit").status_code == 404

    response = api_client(second_engineer).post(
        f"{APPROVALS}/{approval['id']}/approve", {}, format="json"
    )

    assert response.status_code == 409, response.json()
    assert response.json()["error"]["code"] == "requester_not_allowed"
    assert ModelVersion.objects.get().stage == "staging"
    assert not ApprovalStep.objects.exists()
