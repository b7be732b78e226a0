"""The decision search in a real headless Chromium: choosing a model brings its filters.

The browser, its Content-Security-Policy watch and the sign-in are tests/web/test_browser.py's.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from auditapp.celery import app as celery_app
from auditapp.decisions.models import Decision
from explain import publishing
from tests.factories import DecisionPayloadFactory
from tests.web import test_browser

chromium = test_browser.chromium  # the fixture: CSP violations and external requests fail
log_in = test_browser.log_in
SHOTS = test_browser.SHOTS
pytestmark = pytest.mark.django_db(transaction=True)


def test_choosing_a_model_brings_its_prediction_select_without_a_reload(
    live_server, chromium, model_version, ingest, compliance_officer
):
    payloads = DecisionPayloadFactory.build_batch(20)
    ingest(*payloads)
    publishing.wait_until_published()
    celery_app.control.purge()  # no worker here; the explanations are not needed
    bad = set(Decision.objects.filter(prediction="bad").values_list("pk", flat=True))
    assert 0 < len(bad) < 20
    page = chromium.new_page(viewport={"width": 1440, "height": 1000})
    log_in(page, live_server.url, "compliance_officer")

    page.goto(f"{live_server.url}/decisions/")
    expect(page.locator("input[name=prediction]")).to_be_visible()  # any model: free text
    expect(page.locator("select[name=prediction]")).to_have_count(0)
    expect(page.locator("select[name=top_reason]")).to_have_count(0)
    page.evaluate("window.attestNoReload = true")  # gone if the page were loaded again

    page.select_option("select[name=model]", "credit")
    prediction = page.locator("select[name=prediction]")
    expect(prediction).to_be_visible()
    expect(prediction.locator("option")).to_have_text(["any", "good (approved)", "bad (declined)"])
    expect(page.locator("select[name=top_reason] option")).to_have_count(11)
    expect(page.locator("select[name='feature.loan_purpose']")).to_be_attached()
    page.wait_for_url(re.compile(r"model=credit"))  # the results follow (filters-changed)
    expect(page.locator(".count")).to_contain_text("20 decisions match")
    assert page.evaluate("window.attestNoReload") is True

    prediction.select_option("bad")
    page.wait_for_url(re.compile(r"model=credit.*prediction=bad"))
    expect(page.locator(".count")).to_contain_text(f"{len(bad)} decision")
    rows = page.locator("table.results tbody tr")
    expect(rows).to_have_count(len(bad))
    shown = {int(text) for text in rows.locator("td:first-child a").all_inner_texts()}
    assert shown == bad
    expect(rows.locator(".pill")).to_have_text(["bad"] * len(bad))
    assert page.evaluate("window.attestNoReload") is True
    page.screenshot(path=SHOTS / "search-model-filters.png", full_page=True)

    page.reload()  # the URL keeps the choice, and the page selects it again
    expect(page.locator("select[name=model]")).to_have_value("credit")
    expect(page.locator("select[name=prediction]")).to_have_value("bad")
    expect(page.locator("table.results tbody tr")).to_have_count(len(bad))


def test_an_auditor_is_offered_no_masked_feature(live_server, chromium, model_version, auditor):
    page = chromium.new_page()
    log_in(page, live_server.url, "auditor")
    page.goto(f"{live_server.url}/decisions/")

    page.select_option("select[name=model]", "credit")

    reasons = page.locator("select[name=top_reason] option")
    expect(reasons).to_have_count(9)  # ten features, income and sex masked, and "any"
    values = set(reasons.evaluate_all("options => options.map(o => o.value)"))
    assert not values & {"income", "sex"} and "age" in values
    expect(page.locator("[name^='feature.income'], [name='feature.sex']")).to_have_count(0)
