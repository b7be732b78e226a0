"""Every role (plus an outsider, a user without a role, and anonymous) against the approvals
endpoints; the expectations follow roles.ROLE_CAPABILITIES. And the history is append-only."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from auditapp.accounts import roles
from auditapp.appendonly import AppendOnlyError
from auditapp.approvals.models import Approval, ApprovalStep
from auditapp.registry.models import ModelVersion
from tests.accounts.test_role_matrix import capabilities, expected_status, sees_credit
from tests.conftest import EVERYONE

STAGE_URL = "/api/v1/models/credit/versions/1/stage"


@pytest.fixture
def asked(api_client, gated_version, second_engineer) -> int:
    """Asked by the second engineer, so that every user in the matrix is someone else."""
    response = api_client(second_engineer).post(STAGE_URL, {"stage": "production"}, format="json")
    assert response.status_code == 202
    return response.json()["approval"]["id"]


@pytest.mark.parametrize("who", EVERYONE)
def test_reading_approvals(api_client, users, asked, who):
    client = api_client(users[who])
    listed = client.get("/api/v1/approvals")
    one = client.get(f"/api/v1/approvals/{asked}")

    assert listed.status_code == expected_status(who, roles.READ_MODELS, scoped=False)
    assert one.status_code == expected_status(who, roles.READ_MODELS)
    if listed.status_code == 200:
        ids = [a["id"] for a in listed.json()["results"]]
        assert ids == ([asked] if sees_credit(who) else [])


@pytest.mark.parametrize("who", EVERYONE)
def test_approving(api_client, users, asked, who):
    response = api_client(users[who]).post(f"/api/v1/approvals/{asked}/approve", {}, format="json")

    may = capabilities(who) & {roles.CHANGE_STAGE, roles.APPROVE_CHANGES}
    if who == "anonymous":
        expected = 401
    elif roles.READ_MODELS not in capabilities(who):
        expected = 403
    elif not sees_credit(who):
        expected = 404
    else:
        expected = 200 if may else 403
    assert response.status_code == expected, response.json()
    stage = ModelVersion.objects.get().stage
    assert stage == ("production" if expected == 200 else "staging")
    assert ApprovalStep.objects.exists() is (expected == 200)


def test_requests_and_decisions_cannot_be_rewritten(api_client, asked, ml_engineer):
    api_client(ml_engineer).post(f"/api/v1/approvals/{asked}/approve", {}, format="json")
    approval, step = Approval.objects.get(), ApprovalStep.objects.get()

    with pytest.raises(AppendOnlyError):
        Approval.objects.filter(pk=approval.pk).update(summary="nothing")
    with pytest.raises(AppendOnlyError):
        step.delete()
    if connection.vendor == "postgresql":  # below the application: the triggers
        for table in ("approvals_approval", "approvals_approvalstep"):
            with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {table}")
