"""The monitoring pages in a real headless Chromium at 1280 px: the alerts table takes the
page's width and its Acknowledge buttons are whole, a partial first day says so, a
custom computation's page fills in once the worker is done (htmx), and the settings form
saves.

Screenshots go to test-artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from auditapp.accounts import roles
from auditapp.monitoring import snapshots, tasks
from auditapp.monitoring.models import Alert, AlertRule, MetricSnapshot, MonitoringSettings
from auditapp.monitoring.windows import window_floor
from tests.factories import DecisionPayloadFactory
from tests.web.test_browser import SHOTS, chromium, log_in  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db(transaction=True)
WIDTH = 1280
PAGE = "/models/credit/versions/1/monitoring/"


@pytest.fixture
def watched(model_version, ingest, ml_engineer, settings):
    """credit v1 put live at 14:02 two days ago (45 decisions), its day computed, and open
    alerts on it: a rule that any input drift breaks, one alert per feature."""
    settings.ATTEST_MONITORING_MIN_DRIFT_DECISIONS = 40
    day = window_floor("day", datetime.now(UTC)) - timedelta(days=2)
    go_live = day + timedelta(hours=14, minutes=2)
    ingest(
        *(
            DecisionPayloadFactory(predicted_at=(go_live + timedelta(minutes=5 * i)).isoformat())
            for i in range(45)
        )
    )
    AlertRule.objects.create(
        name="Any input drift",
        metric="input_drift_psi",
        comparison="gte",
        threshold=0.0,
        model_version=model_version,
    )
    period = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
    snapshot = snapshots.request_snapshot(roles.Actor(user=ml_engineer), model_version, period)
    assert tasks.compute_window.run(snapshot.pk)["status"] == "done"
    assert Alert.objects.filter(state="open").count() >= 5
    return day


def assert_acknowledge_buttons_whole(page) -> None:
    """Every Acknowledge button lies inside the alerts table and shows all its text."""
    table = page.locator("table.alerts")
    box = table.bounding_box()
    shown = page.locator("div.scroll:has(table.alerts)").bounding_box()  # what is not scrolled off
    buttons = table.locator("button", has_text="Acknowledge")
    assert buttons.count() >= 5
    for index in range(buttons.count()):
        button = buttons.nth(index)
        inner = button.bounding_box()
        for outer in (box, shown):
            assert outer["x"] <= inner["x"]
            assert inner["x"] + inner["width"] <= outer["x"] + outer["width"]
            assert outer["y"] <= inner["y"]
            assert inner["y"] + inner["height"] <= outer["y"] + outer["height"]
        assert button.evaluate("b => b.scrollWidth <= b.clientWidth"), "its text is cut"
        assert button.inner_text() == "Acknowledge"
    # Full width: the table fills its card (less the card's padding), nothing scrolls.
    card = table.evaluate("t => t.closest('.card').clientWidth")
    assert box["width"] >= card - 2 * 23
    assert table.evaluate("t => t.parentElement.scrollWidth <= t.parentElement.clientWidth")


def test_the_alerts_table_takes_the_width_and_its_buttons_are_whole(
    live_server,
    chromium,  # noqa: F811 - the fixture imported above
    watched,
):
    page = chromium.new_page(viewport={"width": WIDTH, "height": 900})
    log_in(page, live_server.url, "ml_engineer")

    page.goto(f"{live_server.url}{PAGE}")
    assert_acknowledge_buttons_whole(page)
    expect(page.locator(".pill.partial").first).to_have_text("partial: 45 decisions from 14:02")
    page.screenshot(path=str(SHOTS / "monitoring-version-alerts.png"), full_page=True)

    page.goto(f"{live_server.url}/monitoring/")
    assert_acknowledge_buttons_whole(page)
    row = page.locator("table.monitoring tbody tr").filter(has_text="credit v1")
    expect(row.locator(".pill.partial")).to_have_text("partial: 45 decisions from 14:02")
    page.screenshot(path=str(SHOTS / "monitoring-dashboard-alerts.png"), full_page=True)

    page.goto(f"{live_server.url}{PAGE}")
    first = page.locator("table.alerts tbody tr").first
    first.locator("button", has_text="Acknowledge").click()
    expect(page.locator("table.alerts tbody tr").first).to_contain_text("acknowledged")


def test_a_custom_computation_fills_in_its_page_and_the_settings_form_saves(
    live_server,
    chromium,  # noqa: F811
    watched,
    model_version,
):
    start, end = watched + timedelta(hours=12), watched + timedelta(hours=18)
    page = chromium.new_page(viewport={"width": WIDTH, "height": 900})
    log_in(page, live_server.url, "ml_engineer")
    page.goto(f"{live_server.url}{PAGE}")

    page.fill("input[name=from]", f"{start:%Y-%m-%dT%H:%M}")
    page.fill("input[name=to]", f"{end:%Y-%m-%dT%H:%M}")
    page.click("button:has-text('Compute')")
    page.wait_for_url(re.compile(r"/monitoring/computations/\d+/$"))
    snapshot = MetricSnapshot.objects.get(window="custom")
    assert page.url.endswith(f"{PAGE}computations/{snapshot.pk}/")
    status = page.locator("#snapshot [data-status]")
    expect(status).to_have_text("pending")

    assert tasks.compute_window.run(snapshot.pk)["status"] == "done"  # as the worker would
    expect(status).to_have_text("done", timeout=15_000)  # htmx asked again, and got it
    snapshot.refresh_from_db()
    expect(page.locator('[data-figure="decisions"]')).to_have_text(str(snapshot.decisions))
    expect(page.locator('[data-figure="score_psi"]')).to_contain_text(
        f"{snapshot.data['score_drift']['psi']:.3f}"
    )
    page.screenshot(path=str(SHOTS / "monitoring-computation.png"), full_page=True)

    page.goto(f"{live_server.url}{PAGE}")
    page.fill("input[name='fairness_groups.age']", "30, 50")
    page.click("button:has-text('Save settings')")
    expect(page.locator("#settings .notice.ok")).to_contain_text("Monitoring settings saved")
    config = MonitoringSettings.objects.get(model_version=model_version)
    assert config.fairness_groups == {"age": [30, 50]}
    page.fill("input[name='fairness_groups.age']", "50, 30")
    page.click("button:has-text('Save settings')")
    expect(page.locator("#error-fairness_groups\\.age")).to_contain_text(
        "fairness_groups.age must be increasing finite numbers"
    )
    page.locator("#settings").screenshot(path=str(SHOTS / "monitoring-settings-refused.png"))
    config.refresh_from_db()
    assert config.fairness_groups == {"age": [30, 50]}
