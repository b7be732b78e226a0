"""A model owner's path in a real headless Chromium: the dashboard shows drift and an open
alert, the version page shows the figures over time, and the alert is acknowledged.

Screenshots go to test-artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from auditapp.monitoring.models import Alert
from tests.monitoring.conftest import a_day, shifted
from tests.monitoring.test_alerts import compute_day
from tests.web.test_browser import SHOTS, chromium, log_in  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_model_owner_sees_drift_over_time_and_acknowledges_the_alert(
    live_server,
    chromium,  # noqa: F811 - the fixture imported above
    role_groups,
    ml_engineer,
    german_version,
    stream,
    unseen,
):
    for days_ago, frame in ((5, unseen), (4, unseen), (3, shifted(unseen))):
        stream(frame, a_day(days_ago), f"d{days_ago}")
        compute_day(german_version, ml_engineer, a_day(days_ago))
    alert = Alert.objects.get(metric="input_drift_psi", subject="age")
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, live_server.url, "ml_engineer")

    page.goto(f"{live_server.url}/monitoring/")
    row = page.locator("table.monitoring tbody tr").filter(has_text="german v1")
    expect(row).to_contain_text("drifted: credit_amount, age")
    expect(page.locator("table.alerts")).to_contain_text(alert.message)
    page.screenshot(path=str(SHOTS / "monitoring-dashboard.png"), full_page=True)

    page.click("text=german v1")
    expect(page.locator("h1")).to_contain_text("Monitoring: german v1")
    expect(page.locator("svg title").filter(has_text="Drift of Age")).to_have_count(1)
    page.screenshot(path=str(SHOTS / "monitoring-version.png"), full_page=True)

    page.goto(f"{live_server.url}/monitoring/")
    page.locator("table.alerts tr").filter(has_text=alert.message).locator(
        "button", has_text="Acknowledge"
    ).click()
    expect(page.locator("table.alerts tr").filter(has_text=alert.message)).to_contain_text(
        "acknowledged"
    )
    alert.refresh_from_db()
    assert (alert.state, alert.acknowledged_by) == ("acknowledged", ml_engineer)
