"""GET/PUT /api/v1/models/{name}/traffic and POST .../rollback: the policy, its checks, its
history and audit, and what each strategy serves (canary, toggle and fallback)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from django.test import Client

from auditapp.accounts.event_sentences import describe
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import CANARY, FALLBACK, PRODUCTION, Decision
from auditapp.serving import warm
from auditapp.serving.models import TrafficPolicy
from auditapp.serving.policies import place
from tests.conftest import PASSWORD
from tests.factories import applicant_inputs
from tests.serving.helpers import expected, instance, predict_url, put_policy, traffic_url

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

EVENT = "model.traffic_changed"


def test_every_problem_of_a_policy_is_named_and_nothing_changes(api_client, admin, versions):
    bad = {
        "production": "9",
        "canary": {"version": "1", "share": 1.5, "weight": 2},
        "shadow": ["2", "2", 3],
        "enabled": "yes",
        "fallback": "1",
        "colour": "blue",
    }
    response = api_client(admin).put(traffic_url(), bad, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_policy"
    problems = {(d["field"], d["message"]) for d in error["details"]}
    fields = {field for field, _ in problems}
    assert fields == {
        "colour",
        "production",
        "canary.weight",
        "canary.share",
        "shadow[1]",
        "shadow[2]",
        "enabled",
        "fallback",
    }
    assert ("production", "no version '9' of this model") in problems
    assert ("shadow[1]", "repeats version 2") in problems
    assert "already in canary.version" in next(m for f, m in problems if f == "fallback")
    assert TrafficPolicy.objects.count() == 0
    assert not AuditEvent.objects.filter(action=EVENT).exists()


def test_a_version_in_two_arms_or_archived_is_refused(api_client, admin, versions):
    client = api_client(admin)
    twice = client.put(traffic_url(), {"production": "1", "shadow": ["1"]}, format="json")
    assert twice.status_code == 400
    assert twice.json()["error"]["details"] == [
        {"field": "shadow[0]", "message": "version 1 is already in production"}
    ]
    client.post("/api/v1/models/credit/versions/3/stage", {"stage": "archived"}, format="json")
    archived = client.put(traffic_url(), {"production": "3"}, format="json")
    assert archived.status_code == 400
    assert "archived" in archived.json()["error"]["details"][0]["message"]
    missing = client.put(traffic_url(), {"canary": None}, format="json")
    assert missing.json()["error"]["details"] == [
        {"field": "production", "message": "is required: the version that answers"}
    ]


def test_a_change_is_a_new_row_and_an_audit_event_with_before_and_after(
    api_client, admin, ml_engineer, versions
):
    first = put_policy(api_client(admin), production="1")
    second = put_policy(
        api_client(ml_engineer), production="1", canary={"version": "2", "share": 0.25}
    )

    assert second["revision"] > first["revision"]
    assert second["changed"] is True and second["changed_by"] == "ml_engineer"
    read = api_client(admin).get(traffic_url()).json()
    assert read["canary"] == {"version": "2", "share": 0.25}
    assert read["revision"] == second["revision"]
    assert TrafficPolicy.objects.count() == 2
    event = AuditEvent.objects.filter(action=EVENT).first()  # newest first
    assert event.actor == ml_engineer and event.model == "credit"
    assert event.details["before"]["canary"] is None
    assert event.details["after"]["canary"] == {"version": "2", "share": 0.25}
    assert str(describe(event)) == (
        "ml_engineer changed the traffic policy of model credit (canary none \u2192 v2 at 25%)"
    )
    # The same policy again changes nothing and writes nothing; what PUT answered may be
    # sent back as it is (its read-only fields are ignored).
    same = api_client(ml_engineer).put(traffic_url(), second, format="json").json()
    assert same["changed"] is False and same["revision"] == second["revision"]
    assert TrafficPolicy.objects.count() == 2


@pytest.mark.parametrize("who", ["domain_expert", "compliance_officer", "auditor"])
def test_readers_may_read_but_not_change_the_policy(api_client, users, versions, who):
    client = api_client(users[who])
    assert client.get(traffic_url()).status_code == 200
    assert client.put(traffic_url(), {"production": "1"}, format="json").status_code == 403
    assert client.post(traffic_url().replace("traffic", "rollback")).status_code == 403
    assert TrafficPolicy.objects.count() == 0


def test_an_outsider_finds_no_policy_to_read_or_change(api_client, outsider, versions):
    client = api_client(outsider)
    assert client.get(traffic_url()).status_code == 404
    assert client.put(traffic_url(), {"production": "1"}, format="json").status_code == 404


def test_an_admin_token_changes_the_traffic_and_a_read_token_does_not(
    token_client, admin, versions
):
    admin_client, _ = token_client(admin, ["admin"])
    read_client, _ = token_client(admin, ["read"])
    assert read_client.put(traffic_url(), {"production": "1"}, format="json").status_code == 403
    assert admin_client.put(traffic_url(), {"production": "1"}, format="json").status_code == 200


def test_the_canary_takes_its_share_of_subjects_and_a_subject_never_flips(
    api_client, admin, ml_engineer, versions, pipelines
):
    share = 0.3
    put_policy(api_client(admin), production="1", canary={"version": "2", "share": share})
    client = api_client(ml_engineer)
    subjects = [f"subject-{n}" for n in range(2000)]
    arms = {}
    for start in (0, 1000):
        batch = [
            instance(n, subject_ref=subjects[n], request_id=f"a-{n}")
            for n in range(start, start + 1000)
        ]
        response = client.post(predict_url(), {"instances": batch}, format="json")
        assert response.status_code == 200
        for item, result in zip(batch, response.json()["results"], strict=True):
            arms[item["subject_ref"]] = result["arm"]
            version = "2" if result["arm"] == CANARY else "1"
            assert result["version"] == version
            if item["request_id"].endswith("7"):  # a sample: the model that answered, its score
                assert result["score"] == pytest.approx(
                    expected(pipelines[version], item["inputs"])[1], abs=1e-12
                )

    counts = Counter(arms.values())
    assert set(counts) == {PRODUCTION, CANARY}
    # Binomial: 2,000 subjects at 0.3 is 600 +- 20.5; four standard deviations.
    assert abs(counts[CANARY] - 2000 * share) < 4 * math.sqrt(2000 * share * (1 - share))
    assert all((place("credit", s) < share) == (arms[s] == CANARY) for s in subjects)

    # The same subjects again, with new requests: each gets the arm it had.
    again = [instance(n, subject_ref=subjects[n], request_id=f"b-{n}") for n in range(0, 300)]
    results = client.post(predict_url(), {"instances": again}, format="json").json()["results"]
    assert [r["arm"] for r in results] == [arms[s] for s in subjects[:300]]
    # Without a subject, the request_id decides, as stickily.
    keyed = [instance(n, request_id=f"k-{n}") for n in range(300, 400)]
    results = client.post(predict_url(), {"instances": keyed}, format="json").json()["results"]
    assert [r["arm"] for r in results] == [
        CANARY if place("credit", f"k-{n}") < share else PRODUCTION for n in range(300, 400)
    ]
    assert Decision.objects.filter(arm=CANARY, model_version=versions["2"]).count() == (
        counts[CANARY]
        + sum(arms[s] == CANARY for s in subjects[:300])
        + sum(r["arm"] == CANARY for r in results)
    )


def test_turned_off_the_fallback_answers_and_without_one_503(
    api_client, admin, ml_engineer, versions, pipelines
):
    put_policy(
        api_client(admin),
        production="1",
        canary={"version": "3", "share": 1.0},
        enabled=False,
        fallback="2",
    )
    client = api_client(ml_engineer)
    answer = client.post(predict_url(), instance(4), format="json").json()
    assert (answer["version"], answer["arm"]) == ("2", FALLBACK)
    assert answer["score"] == pytest.approx(expected(pipelines["2"], applicant_inputs(4))[1])
    assert Decision.objects.get(pk=answer["decision_id"]).arm == FALLBACK

    put_policy(api_client(admin), production="1", enabled=False)
    refused = client.post(predict_url(), instance(5), format="json")
    assert refused.status_code == 503
    assert refused["Retry-After"] == "60"
    assert refused.json()["error"]["code"] == "serving_disabled"
    assert not Decision.objects.filter(request_id="req-000005").exists()

    put_policy(api_client(admin), production="1", enabled=True)
    answer = client.post(predict_url(), instance(5), format="json").json()
    assert (answer["version"], answer["arm"]) == ("1", PRODUCTION)


def test_rollback_returns_to_the_previous_policy_in_one_call(
    api_client, admin, ml_engineer, versions
):
    client = api_client(admin)
    rollback = traffic_url().replace("traffic", "rollback")
    assert client.post(rollback).status_code == 409  # nothing yet
    first = put_policy(client, production="1")
    assert client.post(rollback).json()["error"]["code"] == "nothing_to_roll_back"
    second = put_policy(client, production="2", shadow=["3"])

    response = client.post(rollback)

    assert response.status_code == 200
    body = response.json()
    assert (body["production"], body["shadow"], body["action"]) == ("1", [], "rollback")
    assert body["rolled_back"] == second["revision"]
    assert body["revision"] > second["revision"]
    answer = api_client(ml_engineer).post(predict_url(), instance(1), format="json").json()
    assert answer["version"] == "1"
    event = AuditEvent.objects.filter(action=EVENT).first()
    assert event.details["change"] == "rollback"
    assert event.details["before"]["production"] == "2"
    assert event.details["after"]["production"] == "1"
    assert str(describe(event)).startswith(
        "admin rolled back the traffic policy of model credit (production v2 \u2192 v1"
    )
    # The first policy replaced none: there is nothing further back.
    assert client.post(rollback).status_code == 409
    assert TrafficPolicy.objects.count() == 3
    assert first["revision"] < second["revision"]


def test_the_warm_models_follow_the_policy(api_client, admin, ml_engineer, versions):
    client = api_client(ml_engineer)
    put_policy(api_client(admin), production="1")
    client.post(predict_url(), instance(1), format="json")
    assert warm.warm_versions(versions["1"].registered_model_id) == [versions["1"].pk]

    put_policy(api_client(admin), production="2")
    client.post(predict_url(), instance(2), format="json")
    assert warm.warm_versions(versions["1"].registered_model_id) == [versions["2"].pk]


def test_the_traffic_page_shows_the_policy_and_its_history(api_client, admin, versions, users):
    client = api_client(admin)
    put_policy(client, production="1")
    put_policy(client, production="2", canary={"version": "3", "share": 0.1})
    client.post(traffic_url().replace("traffic", "rollback"))

    browser = Client()
    assert browser.login(username="compliance_officer", password=PASSWORD)
    page = browser.get("/models/credit/traffic/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "rolled back revision" in html
    assert "canary: none → v3 at 10%" in html
    assert "production: v1 → v2" in html
    outsider = Client()
    assert outsider.login(username="outsider", password=PASSWORD)
    assert outsider.get("/models/credit/traffic/").status_code == 404


def test_a_rollback_onto_a_version_archived_since_is_refused(api_client, admin, versions):
    client = api_client(admin)
    put_policy(client, production="1")
    put_policy(client, production="2")
    client.post("/api/v1/models/credit/versions/1/stage", {"stage": "archived"}, format="json")

    response = client.post(traffic_url().replace("traffic", "rollback"))

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "rollback_invalid"
    assert error["details"][0]["field"] == "production"
    assert "archived" in error["details"][0]["message"]
    assert client.get(traffic_url()).json()["production"] == "2"


def test_a_rollback_with_a_body_is_refused_by_name_and_nothing_is_rolled_back(
    api_client, admin, versions
):
    """Rollback takes no body: {"revision": 1} (meaning "back to revision 1") was ignored
    and the policy rolled back to the one before, whatever that was."""
    client = api_client(admin)
    put_policy(client, production="1")
    latest = put_policy(client, production="2")

    response = client.post(
        traffic_url().replace("traffic", "rollback"), {"revision": 1}, format="json"
    )

    assert response.status_code == 400, response.json()
    assert list(response.json()["error"]["details"]) == ["revision"]
    assert TrafficPolicy.objects.count() == 2
    assert client.get(traffic_url()).json()["revision"] == latest["revision"]
