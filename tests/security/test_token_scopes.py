"""Token scopes: one table in roles.py, every cell tested, and scopes never narrow reach.

The finding: an admin token with scope `ingest` could not ingest into a model the
admin was not assigned to ("unknown model or version"): intersecting the role's
capabilities with the scope's dropped the admin's all-models reach. Likewise
for `read` and `report`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from auditapp.accounts import roles
from auditapp.accounts.services import create_api_token
from auditapp.decisions.models import Decision
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("scope", roles.SCOPES)
@pytest.mark.parametrize("capability", sorted(roles.CAPABILITIES))
def test_every_cell_of_the_scope_table(admin, scope, capability):
    """An admin's token (the role allows everything) can do exactly what its scope allows."""
    token, _ = create_api_token(admin, scopes=[scope])
    actor = roles.Actor(user=admin, token=token)

    allowed = capability in roles.SCOPE_CAPABILITIES[scope] or capability in roles.ROLE_REACH
    assert actor.can(capability) == allowed


def test_a_token_never_exceeds_its_users_role(auditor):
    token, _ = create_api_token(auditor, scopes=list(roles.SCOPES))
    actor = roles.Actor(user=auditor, token=token)
    assert actor.capabilities == roles.ROLE_CAPABILITIES[roles.AUDITOR]


def test_the_readme_table_is_the_one_in_roles_py():
    assert roles.scope_table() in README.read_text()


# --- the finding, through the real endpoints, on a model the admin is not assigned to ---


@pytest.fixture
def credit(model_version, ingest, admin):
    assert not model_version.registered_model.assignees.filter(pk=admin.pk).exists()
    return ingest(*DecisionPayloadFactory.build_batch(2))


def test_an_admin_ingest_token_ingests_into_any_model(token_client, admin, credit):
    client, _ = token_client(admin, ["ingest"])
    item = DecisionPayloadFactory()

    response = client.post("/api/v1/decisions", item, format="json")

    assert response.status_code == 201, response.content
    assert Decision.objects.filter(request_id=item["request_id"]).exists()
    assert client.get("/api/v1/decisions").status_code == 403  # ingest does not read


def test_an_admin_read_token_reads_any_model_and_may_ask_for_explanations(
    token_client, admin, credit
):
    client, _ = token_client(admin, ["read"])

    found = client.get("/api/v1/decisions", {"model": "credit"})
    explain = client.post(f"/api/v1/decisions/{credit[0]['id']}/explain", {}, format="json")
    ingest = client.post("/api/v1/decisions", DecisionPayloadFactory(), format="json")

    assert found.status_code == 200
    assert {d["id"] for d in found.json()["results"]} == {r["id"] for r in credit}
    assert explain.status_code == 202
    assert ingest.status_code == 403


def test_an_admin_report_token_reports_on_any_model(token_client, admin, credit):
    client, _ = token_client(admin, ["report"])
    body = {
        "kind": "model_compliance",
        "model": "credit",
        "version": "1",
        "from": "2026-01-01T00:00:00Z",
        "to": "2027-01-01T00:00:00Z",
        "format": "json",
    }

    response = client.post("/api/v1/reports", body, format="json")

    assert response.status_code == 202, response.content


def test_models_still_narrow_a_token(token_client, admin, credit):
    client, _ = token_client(admin, ["read"], models=["other"])

    assert client.get(f"/api/v1/decisions/{credit[0]['id']}").status_code == 404
    assert client.get("/api/v1/decisions").json()["results"] == []


def test_the_scopes_listed_in_the_readme_are_the_scopes(admin):
    listed = re.search(r"\| capability \|(.*)\|", README.read_text()).group(1)
    assert [s.strip(" `") for s in listed.split("|")] == list(roles.SCOPES)
