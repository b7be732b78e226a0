"""Every role (plus an outsider, a user without a role, and anonymous) against every endpoint.

The expectations are computed from roles.ROLE_CAPABILITIES, so the matrix
follows the role map: a capability the role lacks is a 403 (audited, nothing
written), a model the user may not see is a 404 (its existence is not revealed),
and anonymous requests are refused with 401.
"""

from __future__ import annotations

import pytest

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from auditapp.decisions.presenters import MASK
from auditapp.registry.models import ModelVersion, StageChange
from explain.models import Explanation
from tests.conftest import EVERYONE
from tests.factories import DecisionPayloadFactory, upload_form

# Who is assigned to the credit model: the ML engineer registered it, and the
# domain expert was assigned; the outsider (also a domain expert) was not.
ASSIGNED = {"ml_engineer", "domain_expert"}
SENSITIVE = ["income", "sex"]


def capabilities(who: str) -> frozenset[str]:
    if who in ("anonymous", "no_role"):
        return frozenset()
    return roles.ROLE_CAPABILITIES[roles.DOMAIN_EXPERT if who == "outsider" else who]


def sees_credit(who: str) -> bool:
    return roles.ALL_MODELS in capabilities(who) or who in ASSIGNED


def expected_status(who: str, *needed: str, ok: int = 200, scoped: bool = True) -> int:
    """What a request needing every capability `needed` on the credit model answers to `who`."""
    if who == "anonymous":
        return 401
    if not set(needed) <= capabilities(who):
        return 403
    if scoped and not sees_credit(who):
        return 404
    return ok


def expected_write_status(who: str, capability: str, *, ok: int) -> int:
    """A write on the credit model: the object is looked up (read) before the write is checked."""
    read = expected_status(who, roles.READ_MODELS)
    return read if read != 200 else expected_status(who, capability, ok=ok)


@pytest.fixture
def world(users, model_version, decision, api_client):
    """The credit model, one of its decisions, and a client per user."""
    return {"version": model_version, "decision": decision, "users": users, "client": api_client}


def denials():
    return AuditEvent.objects.filter(action="access.denied")


def request_as(world, who: str, method: str, url: str, **kwargs):
    """Send the request as `who` and check the denial audit trail that goes with the answer."""
    user = world["users"][who]
    denied_before = denials().count()
    response = getattr(world["client"](user), method)(url, **kwargs)
    if response.status_code == 403:
        assert response.json()["error"]["code"] == "forbidden"
        assert denials().count() == denied_before + 1
        event = denials().first()
        assert event.actor == user
        assert event.details["path"] == url.split("?")[0]
        assert event.details["method"] == method.upper()
    else:
        assert denials().count() == denied_before
    if response.status_code == 401:
        assert response["WWW-Authenticate"] == "Token"
    if response.status_code == 404:
        assert response.json()["error"]["code"] == "not_found"
    return response


@pytest.mark.parametrize("who", EVERYONE)
def test_list_models(world, who):
    response = request_as(world, who, "get", "/api/v1/models")

    assert response.status_code == expected_status(who, roles.READ_MODELS, scoped=False)
    if response.status_code == 200:
        models = response.json()["results"]
        assert [m["name"] for m in models] == (["credit"] if sees_credit(who) else [])
        if models:
            assert models[0]["owner"] == "ml_engineer"
            assert models[0]["versions"] == [
                {
                    "name": "credit",
                    "version": "1",
                    "sha256": world["version"].artifact_sha256,
                    "stage": "staging",
                    "url": "/api/v1/models/credit/versions/1",
                }
            ]


@pytest.mark.parametrize("who", EVERYONE)
def test_register_model_version(world, who, skops_artifact, background_csv):
    versions_before = ModelVersion.objects.count()

    response = request_as(
        world,
        who,
        "post",
        "/api/v1/models",
        data=upload_form(skops_artifact, version="2", background=background_csv),
        format="multipart",
    )

    if who == "anonymous":
        expected = 401
    elif roles.REGISTER_MODELS not in capabilities(who):
        expected = 403
    else:  # a model one may not see cannot get new versions from one
        expected = 201 if sees_credit(who) else 409
    assert response.status_code == expected, response.content
    if expected == 201:
        assert response.json()["version"] == "2"
        created = ModelVersion.objects.get(registered_model__name="credit", version="2")
        assert created.created_by == world["users"][who]
        assert ModelVersion.objects.count() == versions_before + 1
    else:
        assert ModelVersion.objects.count() == versions_before


@pytest.mark.parametrize("who", EVERYONE)
def test_model_detail(world, who):
    response = request_as(world, who, "get", "/api/v1/models/credit")

    assert response.status_code == expected_status(who, roles.READ_MODELS)
    if response.status_code == 200:
        body = response.json()
        assert (body["name"], body["task"], body["owner"]) == (
            "credit",
            "classification",
            "ml_engineer",
        )
        assert [v["version"] for v in body["versions"]] == ["1"]


@pytest.mark.parametrize("who", EVERYONE)
def test_model_version_detail(world, who):
    response = request_as(world, who, "get", "/api/v1/models/credit/versions/1")

    assert response.status_code == expected_status(who, roles.READ_MODELS)
    if response.status_code == 200:
        body = response.json()
        assert body["sha256"] == world["version"].artifact_sha256
        assert body["schema"] == world["version"].schema
        assert body["background_rows"] == 60


@pytest.mark.parametrize("who", EVERYONE)
def test_change_stage(world, who):
    url = "/api/v1/models/credit/versions/1/stage"

    response = request_as(world, who, "post", url, data={"stage": "production"}, format="json")

    expected = expected_write_status(who, roles.CHANGE_STAGE, ok=200)
    assert response.status_code == expected
    version = ModelVersion.objects.get(pk=world["version"].pk)
    changes = StageChange.objects.filter(model_version=version)
    if expected == 200:
        assert response.json()["stage"] == version.stage == "production"
        assert changes.count() == 2
    else:
        assert version.stage == "staging"
        assert changes.count() == 1


@pytest.mark.parametrize("who", EVERYONE)
def test_record_decisions(world, who):
    item = DecisionPayloadFactory()
    before = (Decision.objects.count(), Explanation.objects.count())

    response = request_as(world, who, "post", "/api/v1/decisions", data=item, format="json")

    expected = expected_status(who, roles.INGEST, ok=201, scoped=False)
    if expected == 201 and not sees_credit(who):
        expected = 400  # the model is unknown to whoever may not see it
    assert response.status_code == expected, response.content
    if expected == 201:
        (result,) = response.json()["results"]
        stored = Decision.objects.get(pk=result["id"])
        assert (stored.request_id, stored.recorded_by) == (item["request_id"], world["users"][who])
        assert (Decision.objects.count(), Explanation.objects.count()) == (
            before[0] + 1,
            before[1] + 2,
        )
    else:
        assert (Decision.objects.count(), Explanation.objects.count()) == before


@pytest.mark.parametrize("who", EVERYONE)
def test_list_decisions(world, who):
    response = request_as(world, who, "get", "/api/v1/decisions")

    assert response.status_code == expected_status(who, roles.READ_DECISIONS, scoped=False)
    if response.status_code == 200:
        results = response.json()["results"]
        if not sees_credit(who):
            assert results == []
            return
        (summary,) = results
        decision = world["decision"]
        assert summary["id"] == decision.pk
        assert summary["request_id"] == decision.request_id
        assert_masking(who, summary, decision)


@pytest.mark.parametrize("who", EVERYONE)
def test_decision_detail(world, who):
    decision = world["decision"]
    viewed_before = AuditEvent.objects.filter(action="decision.viewed").count()

    response = request_as(world, who, "get", f"/api/v1/decisions/{decision.pk}")

    assert response.status_code == expected_status(who, roles.READ_DECISIONS)
    viewed = AuditEvent.objects.filter(action="decision.viewed")
    if response.status_code == 200:
        body = response.json()
        assert (body["id"], body["content_hash"]) == (decision.pk, decision.content_hash)
        assert set(body["explanations"]) == {"shap", "lime"}
        assert_masking(who, body, decision)
        assert viewed.count() == viewed_before + 1
        assert viewed.first().actor == world["users"][who]
    else:
        assert viewed.count() == viewed_before


@pytest.mark.parametrize("who", EVERYONE)
def test_request_explanations(world, who):
    decision = world["decision"]
    url = f"/api/v1/decisions/{decision.pk}/explain"

    response = request_as(world, who, "post", url, data={"methods": ["shap"]}, format="json")

    read = expected_status(who, roles.READ_DECISIONS)
    expected = read if read != 200 else expected_status(who, roles.REQUEST_EXPLANATIONS, ok=202)
    assert response.status_code == expected
    requested = AuditEvent.objects.filter(action="decision.explain_requested")
    if expected == 202:
        assert response.json()["queued"] == ["shap"]
        assert requested.get().actor == world["users"][who]
    else:
        assert not requested.exists()


@pytest.mark.parametrize("who", EVERYONE)
def test_what_if(world, who):
    decision = world["decision"]
    url = f"/api/v1/decisions/{decision.pk}/what-if"
    body = {"inputs": {"debt_ratio": 0.1, **({} if who != "auditor" else {"income": 1.0})}}
    decisions_before = Decision.objects.count()

    response = request_as(world, who, "post", url, data=body, format="json")

    # Refused before the decision is looked up: an auditor learns nothing, not even
    # whether the decision exists.
    assert response.status_code == expected_status(who, roles.READ_DECISIONS, roles.WHAT_IF)
    tried = AuditEvent.objects.filter(action="decision.what_if")
    if response.status_code == 200:
        assert response.json()["changed"] == ["debt_ratio"]
        assert tried.get().actor == world["users"][who]
    else:
        assert "score" not in response.content.decode()
        assert not tried.exists()
    assert Decision.objects.count() == decisions_before


def assert_masking(who: str, shown: dict, decision: Decision) -> None:
    if roles.VIEW_SENSITIVE in capabilities(who):
        assert shown["masked_features"] == []
        assert shown["inputs"] == decision.full_inputs()
    else:
        assert shown["masked_features"] == SENSITIVE
        assert shown["inputs"] == {
            **decision.full_inputs(),
            **dict.fromkeys(SENSITIVE, MASK),
        }


def test_a_decision_of_an_unknown_id_is_404_like_a_hidden_one(world):
    hidden = request_as(world, "outsider", "get", f"/api/v1/decisions/{world['decision'].pk}")
    missing = request_as(
        world, "outsider", "get", f"/api/v1/decisions/{world['decision'].pk + 999}"
    )

    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["message"] == f"No decision {world['decision'].pk}."


class TestSensitiveFeatures:
    def test_it_masks_sensitive_features_for_auditors(self, world):
        decision = world["decision"]

        listed = request_as(world, "auditor", "get", "/api/v1/decisions").json()["results"][0]
        detail = request_as(world, "auditor", "get", f"/api/v1/decisions/{decision.pk}").json()

        for shown in (listed, detail):
            assert shown["masked_features"] == ["income", "sex"]
            assert shown["inputs"]["income"] == shown["inputs"]["sex"] == "[masked]"
            assert shown["inputs"]["age"] == decision.full_inputs()["age"]
            assert str(decision.full_inputs()["income"]) not in str(shown)

    def test_it_shows_sensitive_features_to_compliance_officers(self, world):
        decision = world["decision"]

        listed = request_as(world, "compliance_officer", "get", "/api/v1/decisions").json()
        detail = request_as(world, "compliance_officer", "get", f"/api/v1/decisions/{decision.pk}")

        for shown in (listed["results"][0], detail.json()):
            assert shown["masked_features"] == []
            assert shown["inputs"]["income"] == decision.full_inputs()["income"]
            assert shown["inputs"]["sex"] == decision.full_inputs()["sex"]
