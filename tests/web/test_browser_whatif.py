"""What-if on the decision page, in a real headless Chromium under the site's CSP: a domain
expert changes inputs, submits, and sees the model's new score beside the original's."""

from __future__ import annotations

import pandas as pd
import pytest
from playwright.sync_api import expect

from auditapp.accounts.models import AuditEvent
from auditapp.celery import app as celery_app
from auditapp.decisions.models import Decision
from auditapp.registry.services import load_model
from explain import publishing
from tests.factories import DecisionPayloadFactory
from tests.web.test_browser import SHOTS, chromium, log_in  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_domain_expert_tries_a_what_if_beside_the_original(
    live_server,
    chromium,  # noqa: F811 - the fixture imported above
    model_version,
    ingest,
    domain_expert,
):
    (result,) = ingest(DecisionPayloadFactory())
    publishing.wait_until_published()
    celery_app.control.purge()  # no worker: the what-if needs none
    decision = Decision.objects.get(pk=result["id"])
    changed = {"debt_ratio": 1.4, "prior_defaults": 3, "housing": "rent"}
    pipeline = load_model(model_version)
    names = model_version.parsed_schema.names
    frame = pd.DataFrame([{n: {**decision.full_inputs(), **changed}[n] for n in names}])
    expected = pipeline.predict_proba(frame)[0, list(pipeline.classes_).index("bad")]
    page = chromium.new_page(viewport={"width": 1440, "height": 1100})

    log_in(page, live_server.url, "domain_expert")
    page.goto(f"{live_server.url}/decisions/{decision.pk}/")
    panel = page.locator("#what-if")
    expect(panel.locator("input[name=debt_ratio]")).to_have_value(
        str(decision.full_inputs()["debt_ratio"])
    )
    panel.locator("input[name=debt_ratio]").fill("1.4")
    panel.locator("input[name=prior_defaults]").fill("3")
    panel.locator("select[name=housing]").select_option("rent")
    panel.locator("button:has-text('Try it')").click()  # htmx swaps the panel

    original = page.locator("#what-if-original .score")
    new = page.locator("#what-if-new .score")
    expect(new).to_have_text(f"{expected:.4f}")
    expect(original).to_have_text(f"{decision.score:.4f}")
    expect(page.locator("#what-if .what-if-inputs tr.changed")).to_have_count(
        sum(decision.full_inputs()[k] != v for k, v in changed.items())
    )
    expect(page.locator("#what-if-original svg")).to_have_count(1)
    expect(page.locator("#what-if-new svg")).to_have_count(1)
    page.screenshot(path=SHOTS / "what-if.png", full_page=True)

    # A wrong value is named beside its field, and nothing is computed.
    page.locator("#what-if input[name=debt_ratio]").fill("12")
    page.locator("#what-if button:has-text('Try it')").click()
    expect(page.locator('#what-if label[data-feature="debt_ratio"] .field-error')).to_contain_text(
        "must be ≤ 3"
    )
    expect(page.locator("#what-if-result")).to_have_count(0)
    assert AuditEvent.objects.filter(action="decision.what_if").count() == 1
