"""Every role against every monitoring endpoint and page (the expectations follow roles.py:
reading is READ_MODELS on a visible model, a missing capability is a 403, a model one may
not see is a 404, anonymous is a 401 in the API and the login page in the browser)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.monitoring import snapshots, windows
from auditapp.monitoring.models import Alert, AlertRule, MetricSnapshot, MonitoringSettings
from tests.accounts.test_role_matrix import (
    capabilities,
    expected_status,
    expected_write_status,
    request_as,
    sees_credit,
)
from tests.conftest import EVERYONE
from tests.factories import DecisionPayloadFactory

BASE = "/api/v1/models/credit/versions/1/monitoring"


@pytest.fixture
def world(users, model_version, ingest, api_client, ml_engineer, settings):
    """credit v1 with 40 decisions, a computed day snapshot and an open alert on it."""
    settings.ATTEST_MONITORING_MIN_DRIFT_DECISIONS = 40  # a small world, judged all the same
    results = ingest(*DecisionPayloadFactory.build_batch(40))
    first = model_version.decisions.get(pk=results[0]["id"])
    day = windows.window_floor("day", first.predicted_at)
    rule = AlertRule.objects.create(
        name="Any score drift",
        metric="score_drift_psi",
        comparison="gte",
        threshold=0.0,
        model_version=model_version,
    )
    period = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
    snapshot = snapshots.request_snapshot(roles.Actor(user=ml_engineer), model_version, period)
    snapshot = snapshots.compute_snapshot(snapshot.pk)
    alert = Alert.objects.get(rule=rule)
    return {
        "version": model_version,
        "snapshot": snapshot,
        "alert": alert,
        "period": period,
        "users": users,
        "client": api_client,
    }


@pytest.mark.parametrize("who", EVERYONE)
def test_read_snapshots(world, who):
    response = request_as(world, who, "get", f"{BASE}?window=day")

    assert response.status_code == expected_status(who, roles.READ_MODELS)
    if response.status_code == 200:
        (result,) = response.json()["results"]
        assert result["window_start"] == world["snapshot"].window_start.isoformat()
        assert result["decisions"] == 40
        assert result["status"] == "done"
        assert set(result["drift"]) == set(world["version"].parsed_schema.names)
        assert set(result["fairness"]) == {"age", "sex"}
        assert result["score_drift"]["psi"] == pytest.approx(
            world["snapshot"].data["score_drift"]["psi"]
        )


@pytest.mark.parametrize("who", EVERYONE)
def test_compute_on_demand(world, who):
    period = {"from": "2026-01-05T00:00:00Z", "to": "2026-01-12T00:00:00Z"}
    before = MetricSnapshot.objects.count()

    response = request_as(world, who, "post", BASE, data=period, format="json")

    expected = expected_write_status(who, roles.RUN_MONITORING, ok=202)
    assert response.status_code == expected
    if expected == 202:
        body = response.json()
        assert (body["status"], body["window"]) == ("pending", "week")
        snapshot = MetricSnapshot.objects.get(pk=body["id"])
        assert snapshot.requested_by == world["users"][who]
        event = AuditEvent.objects.get(action="monitoring.requested", object_id=str(snapshot.pk))
        assert event.details["window"] == "week"
    else:
        assert MetricSnapshot.objects.count() == before


@pytest.mark.parametrize("who", EVERYONE)
def test_read_settings(world, who):
    response = request_as(world, who, "get", f"{BASE}/settings")

    assert response.status_code == expected_status(who, roles.READ_MODELS)
    if response.status_code == 200:
        assert response.json()["reference"] == "background"


@pytest.mark.parametrize("who", EVERYONE)
def test_change_settings(world, who):
    data = {"favourable_class": "good", "fairness_groups": {"age": [25, 40, 60]}}

    response = request_as(world, who, "put", f"{BASE}/settings", data=data, format="json")

    expected = expected_write_status(who, roles.CONFIGURE_MONITORING, ok=200)
    assert response.status_code == expected
    config = MonitoringSettings.objects.get(model_version=world["version"])
    if expected == 200:
        assert config.fairness_groups == {"age": [25, 40, 60]}
        event = AuditEvent.objects.get(action="monitoring.configured")
        assert event.details["after"]["favourable_class"] == "good"
        assert event.details["before"]["favourable_class"] is None
    else:
        assert config.fairness_groups == {}


@pytest.mark.parametrize("who", EVERYONE)
def test_list_alerts(world, who):
    response = request_as(world, who, "get", "/api/v1/alerts?model=credit&state=open")

    expected = expected_status(who, roles.READ_MODELS, scoped=False)
    if expected == 200 and not sees_credit(who):
        # a model one may not see is refused as a missing one would be, naming only `model`
        assert response.status_code == 400
        assert list(response.json()["error"]["details"]) == ["model"]
        return
    assert response.status_code == expected
    if response.status_code == 200:
        ids = {a["id"] for a in response.json()["results"]}
        everything = set(Alert.objects.filter(state="open").values_list("pk", flat=True))
        assert world["alert"].pk in everything
        assert ids == (everything if sees_credit(who) else set())


@pytest.mark.parametrize("who", EVERYONE)
def test_acknowledge_an_alert(world, who):
    url = f"/api/v1/alerts/{world['alert'].pk}/acknowledge"

    response = request_as(world, who, "post", url)

    expected = expected_write_status(who, roles.ACKNOWLEDGE_ALERTS, ok=200)
    assert response.status_code == expected
    alert = Alert.objects.get(pk=world["alert"].pk)
    if expected == 200:
        assert response.json()["state"] == alert.state == "acknowledged"
        assert response.json()["acknowledged_by"] == world["users"][who].get_username()
        assert AuditEvent.objects.filter(action="alert.acknowledged").count() == 1
    else:
        assert alert.state == "open"


def test_acknowledging_twice_is_harmless_and_a_resolved_alert_is_a_conflict(world, api_client):
    client = api_client(world["users"]["compliance_officer"])
    url = f"/api/v1/alerts/{world['alert'].pk}/acknowledge"
    assert client.post(url).status_code == 200
    assert client.post(url).status_code == 200
    assert AuditEvent.objects.filter(action="alert.acknowledged").count() == 1
    Alert.objects.filter(pk=world["alert"].pk).update(state="resolved")
    response = client.post(url)
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_bad_periods_are_refused_with_reasons(world, api_client):
    client = api_client(world["users"]["ml_engineer"])
    for period, reason in [
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "after"),
        ({"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00Z"}, "time zone"),
        ({"from": "yesterday", "to": "2026-01-02T00:00:00Z"}, "ISO-8601"),
    ]:
        response = client.post(BASE, period, format="json")
        assert response.status_code == 400
        assert reason in response.json()["error"]["message"]


def test_alerts_filter_by_state(world, api_client):
    client = api_client(world["users"]["admin"])
    assert client.get("/api/v1/alerts?state=resolved").json()["results"] == []
    active = client.get("/api/v1/alerts?state=active").json()["results"]
    assert len(active) == Alert.objects.count() >= 1
    assert client.get("/api/v1/alerts?state=bogus").status_code == 400


# --- pages ---------------------------------------------------------------------------------


def page_status(who: str, capability: str = roles.READ_MODELS, *, ok: int = 200, scoped=True):
    if who == "anonymous":
        return 302  # to the login page
    if capability not in capabilities(who):
        return 403
    if scoped and not _sees(who, capability):
        return 404
    return ok


def _sees(who: str, capability: str) -> bool:
    return sees_credit(who)


def browser(world, who: str) -> Client:
    client = Client()
    if world["users"][who] is not None:
        client.force_login(world["users"][who])
    return client


@pytest.mark.parametrize("who", EVERYONE)
def test_dashboard_page(world, who):
    response = browser(world, who).get("/monitoring/")

    assert response.status_code == page_status(who, scoped=False)
    if response.status_code == 200:
        rows = response.context["rows"]
        assert [v.registered_model.name for v, _ in rows] == (
            ["credit"] if sees_credit(who) else []
        )
        if rows:
            assert rows[0][1]["snapshot"] == world["snapshot"]
            assert b"Any score drift" not in response.content  # the message, not the rule name
            assert world["alert"].message.encode() in response.content
            button = f"/monitoring/alerts/{world['alert'].pk}/acknowledge".encode()
            assert (button in response.content) is (roles.ACKNOWLEDGE_ALERTS in capabilities(who))


@pytest.mark.parametrize("who", EVERYONE)
def test_version_monitoring_page(world, who):
    response = browser(world, who).get("/models/credit/versions/1/monitoring/")

    assert response.status_code == page_status(who)
    if response.status_code == 200:
        figures = response.context["figures"]
        assert len(figures["drift"]) == len(world["version"].parsed_schema.names)
        assert len(figures["fairness"]) == 2
        assert b"<svg" in response.content
        assert b"Drift of Age" in response.content or b"Drift of age" in response.content.lower()
        assert (b"Compute now" in response.content) is (roles.RUN_MONITORING in capabilities(who))


@pytest.mark.parametrize("who", EVERYONE)
def test_compute_from_the_page(world, who):
    before = MetricSnapshot.objects.count()

    response = browser(world, who).post(
        "/models/credit/versions/1/monitoring/compute",
        {"from": "2026-01-05T00:00", "to": "2026-01-06T00:00"},
    )

    if who == "anonymous":
        expected = 302
    else:
        read = page_status(who)
        expected = read if read != 200 else page_status(who, roles.RUN_MONITORING, ok=302)
    assert response.status_code == expected
    created = MetricSnapshot.objects.count() - before
    assert created == (1 if expected == 302 and who != "anonymous" else 0)
    if created:
        assert MetricSnapshot.objects.latest("id").window == "day"


@pytest.mark.parametrize("who", EVERYONE)
def test_acknowledge_from_the_page(world, who):
    response = browser(world, who).post(
        f"/monitoring/alerts/{world['alert'].pk}/acknowledge", {"next": "/monitoring/"}
    )

    if who == "anonymous":
        expected = 302
    else:
        read = page_status(who)
        expected = read if read != 200 else page_status(who, roles.ACKNOWLEDGE_ALERTS, ok=302)
    assert response.status_code == expected
    state = Alert.objects.get(pk=world["alert"].pk).state
    assert state == ("acknowledged" if expected == 302 and who != "anonymous" else "open")


def test_the_dashboard_query_count_does_not_grow_with_versions(
    world, register, ml_engineer, django_assert_max_num_queries
):
    register(ml_engineer, version="2")
    register(ml_engineer, version="3")
    client = browser(world, "compliance_officer")
    client.get("/monitoring/")
    with django_assert_max_num_queries(12):
        response = client.get("/monitoring/")
    assert len(response.context["rows"]) == 3


def test_the_alerts_table_shows_the_value_at_raise_and_the_latest(world):
    """The message states the value when raised; the table shows it too, beside the latest."""
    alert = world["alert"]
    Alert.objects.filter(pk=alert.pk).update(value=0.4321, last_value=0.1234)
    html = browser(world, "compliance_officer").get("/monitoring/").content.decode()
    assert "At raise" in html and "Latest" in html
    assert "0.432" in html and "0.123" in html


@pytest.mark.parametrize(
    "data",
    [
        {"reference_from": "2026-01-01T00:00:00Z", "reference_to": "2026-01-08T00:00:00Z"},
        {"reference": "background", "reference_from": "2026-01-01T00:00:00Z"},
        {"reference_to": "2026-13-01T00:00:00Z"},
    ],
    ids=["without_reference", "with_background", "impossible_without_reference"],
)
def test_a_reference_period_without_reference_period_is_refused_not_ignored(world, data):
    """reference_from and reference_to are read only with "reference": "period": without
    it they were ignored, and the answer, 200 with the settings unchanged, read as done."""
    client = world["client"](world["users"]["ml_engineer"])

    response = client.put(f"{BASE}/settings", data, format="json")

    assert response.status_code == 400, response.json()
    named = {key for key in data if key.startswith("reference_")}
    assert named <= set(response.json()["error"]["details"])
    config = MonitoringSettings.objects.get(model_version=world["version"])
    assert config.reference_kind == MonitoringSettings.BACKGROUND
    assert not AuditEvent.objects.filter(action="monitoring.configured").exists()
