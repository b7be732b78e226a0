"""The reviewer's path in a real headless Chromium (Debian's package, driven by Playwright).

Every page runs under the site's Content-Security-Policy: a violation, or a request to
anything but the test server, fails the test (the `chromium` fixture watches each page).
Screenshots go to test-artifacts/screenshots/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect, sync_playwright

from auditapp.accounts import roles
from auditapp.celery import app as celery_app
from auditapp.reviews.services import flag_decision
from explain import batches, publishing
from explain.models import Explanation
from tests.conftest import PASSWORD
from tests.factories import DecisionPayloadFactory
from tests.workers import Worker

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Chromium reports a refused resource or inline code on the console; the listener
# added to every page reports the securitypolicyviolation event too (init scripts
# are not subject to the page's policy).
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error("CSP violation: " + event.violatedDirective + " " + event.blockedURI);
});
"""
pytestmark = pytest.mark.django_db(transaction=True)


class WatchedBrowser:
    """Playwright's Browser, whose new pages record CSP violations and non-local requests."""

    def __init__(self, browser):
        self.browser = browser
        self.violations: list[str] = []
        self.external: list[str] = []

    def new_page(self, **options):
        page = self.browser.new_page(**options)
        page.add_init_script(REPORT_VIOLATIONS)
        page.on("console", self._console)
        page.route("**/*", self._local_only)
        return page

    def _console(self, message) -> None:
        text = message.text
        if "Content Security Policy" in text or "CSP violation" in text:
            self.violations.append(text)

    def _local_only(self, route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.external.append(route.request.url)
            route.abort()

    def assert_clean(self) -> None:
        assert self.violations == [], self.violations
        assert self.external == [], self.external


@pytest.fixture
def chromium(monkeypatch):
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    # Playwright's sync API runs an event loop in this thread; the test's own
    # database calls are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        watched = WatchedBrowser(browser)
        yield watched
        browser.close()
        watched.assert_clean()


def log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator(".who")).to_contain_text(username)


def test_a_compliance_officer_filters_opens_a_decision_and_recomputes_it(
    live_server, chromium, model_version, ingest, compliance_officer, media_root, tmp_path
):
    payloads = DecisionPayloadFactory.build_batch(20)
    ids = [r["id"] for r in ingest(*payloads)]
    publishing.wait_until_published()
    celery_app.control.purge()  # explained here, not by the worker below
    batches.run_batch(model_version.pk, "shap", ids)
    batches.run_batch(model_version.pk, "lime", ids)
    bad = [p for p in payloads if p["prediction"] == "bad"]
    page = chromium.new_page(viewport={"width": 1440, "height": 1000})

    log_in(page, live_server.url, "compliance_officer")
    page.goto(f"{live_server.url}/decisions/?model=credit")
    expect(page.locator(".count")).to_contain_text("20 decisions match")
    page.select_option("select[name=prediction]", "bad")  # htmx swaps the results in
    page.wait_for_url(re.compile(r"prediction=bad"))
    expect(page.locator(".count")).to_contain_text(f"{len(bad)} decision")
    expect(page.locator("table.results tbody tr")).to_have_count(len(bad))
    page.screenshot(path=SHOTS / "search-filtered.png", full_page=True)

    page.locator("table.results tbody a").first.click()
    features = model_version.parsed_schema.names
    expect(page.locator('svg [data-kind="contribution"]')).to_have_count(len(features))
    decision_id = int(page.url.rstrip("/").split("/")[-1])
    shap = Explanation.objects.get(decision_id=decision_id, method="shap")
    floor = 0.01 * sum(abs(value) for value in shap.attributions.values())  # reasons.MIN_SHARE
    pushing = sum(value > 0 and value >= floor for value in shap.attributions.values())
    expect(page.locator(".reasons li")).to_have_count(min(pushing, 4))
    page.screenshot(path=SHOTS / "decision.png", full_page=True)

    worker = Worker(media_root, tmp_path / "worker.log")
    try:
        page.click("text=Recompute explanations")
        # the explanations' button: a declined decision's counterfactuals compute too
        expect(page.locator("#explanations button:has-text('Computing')")).to_be_visible()
        lime_status = page.locator("h3:has-text('LIME') .status")
        expect(lime_status).to_have_text("done", timeout=120_000)
        expect(page.locator("h3:has-text('SHAP') .status")).to_have_text("done")
    finally:
        worker.stop()
    lime = Explanation.objects.get(decision_id=decision_id, method="lime")
    assert lime.status == Explanation.DONE and lime.attempts == 1
    page.screenshot(path=SHOTS / "decision-recomputed.png", full_page=True)


def test_an_auditor_sees_sensitive_inputs_hidden(
    live_server, chromium, model_version, ingest, auditor
):
    (result,) = ingest(DecisionPayloadFactory())
    page = chromium.new_page()
    log_in(page, live_server.url, "auditor")
    page.goto(f"{live_server.url}/decisions/{result['id']}/")
    expect(page.locator('tr[data-feature="income"] .masked')).to_have_text("hidden")
    expect(page.locator('tr[data-feature="age"] .masked')).to_have_count(0)
    expect(page.locator("text=Recompute explanations")).to_have_count(0)


def test_a_domain_expert_disagrees_then_works_the_case_to_an_override(
    live_server, chromium, model_version, ingest, domain_expert
):
    (result,) = ingest(DecisionPayloadFactory(prediction="bad", score=0.9))
    page = chromium.new_page(viewport={"width": 1440, "height": 1000})
    log_in(page, live_server.url, "domain_expert")
    page.goto(f"{live_server.url}/decisions/{result['id']}/")

    page.check("input[name=verdict][value=disagree]")
    page.select_option("select[name=corrected_label]", "good")
    page.select_option("select[name=explanation_rating]", "2")
    page.fill("textarea[name=comment]", "The guarantor covers the loan.")
    page.click("text=Give feedback")
    expect(page.locator("ul.feedback li").first).to_contain_text("should be good")
    review = page.locator("#review")
    expect(review).to_contain_text("a domain expert disagreed")
    expect(review.locator(".stage")).to_have_text("open")

    page.goto(f"{live_server.url}/review/?who=unassigned")
    page.click(f"a[href='/decisions/{result['id']}/#review']")
    page.click("text=Take this case")
    expect(page.locator("#review .stage")).to_have_text("in review")
    page.check("input[name=resolution][value=overridden]")
    page.locator("#review select[name=outcome]").select_option("good")
    page.fill("textarea[name=rationale]", "Guarantor verified by phone.")
    page.click("#review button:has-text('Resolve')")

    expect(page.locator("#review .stage")).to_have_text("resolved")
    expect(page.locator(".override")).to_contain_text("Overridden to good")
    page.screenshot(path=SHOTS / "case-overridden.png", full_page=True)


def test_the_review_queue_filters_change_without_inline_handlers(
    live_server, chromium, model_version, ingest, domain_expert
):
    ingest(DecisionPayloadFactory(prediction="bad", score=0.9))
    page = chromium.new_page()
    log_in(page, live_server.url, "domain_expert")
    page.goto(f"{live_server.url}/review/")

    page.select_option("select[name=show]", "resolved")  # static/js/attest.js submits the form
    page.wait_for_url(re.compile(r"show=resolved"))
    expect(page.locator("select[name=show]")).to_have_value("resolved")


def test_a_domain_expert_works_the_queue_past_its_first_page(
    live_server, chromium, model_version, ingest, domain_expert
):
    ingest(*DecisionPayloadFactory.build_batch(55))
    actor = roles.Actor(user=domain_expert)
    cases = [
        flag_decision(actor, d, "second look").pk for d in model_version.decisions.order_by("pk")
    ]
    page = chromium.new_page(viewport={"width": 1440, "height": 1000})
    log_in(page, live_server.url, "domain_expert")
    page.goto(f"{live_server.url}/review/?order=oldest")
    expect(page.locator("#queue .pager-bar .count").first).to_contain_text("1\u201350 of 55 cases")
    expect(page.locator("#queue tbody tr")).to_have_count(50)

    page.locator("#queue a[rel=next]").first.click()
    page.wait_for_url(re.compile(r"order=oldest&page=2"))
    expect(page.locator("select[name=order]")).to_have_value("oldest")
    expect(page.locator("#queue .pager-bar .count").first).to_contain_text("51\u201355 of 55 cases")
    rows = page.locator("#queue tbody tr")
    expect(rows).to_have_count(5)
    expect(rows.first.locator("td.score")).not_to_be_empty()
    page.check(f"input[name=case][value='{cases[50]}']")
    page.check(f"input[name=case][value='{cases[51]}']")
    page.click("text=Take selected")

    page.wait_for_url(re.compile(r"order=oldest&page=2"))
    expect(page.locator(".notice.ok")).to_have_text(f"You took 2 cases: {cases[50]}, {cases[51]}.")
    expect(page.locator(f"tr[data-case='{cases[50]}'] .stage")).to_have_text("in review")
    page.screenshot(path=SHOTS / "queue-page-2.png", full_page=True)


def test_the_api_docs_render_from_local_files_under_the_policy(live_server, chromium, auditor):
    page = chromium.new_page(viewport={"width": 1280, "height": 1000})
    log_in(page, live_server.url, "auditor")
    page.click("nav >> text=API")

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Attest API")
    operations = page.locator(".opblock-summary-path")
    expect(operations.filter(has_text=re.compile(r"^/api/v1/decisions$"))).to_have_count(2)
    assert operations.count() > 20
    models = page.locator(".opblock-get").filter(
        has=page.locator(".opblock-summary-path", has_text=re.compile(r"^/api/v1/models$"))
    )
    models.locator(".opblock-summary").click()
    models.locator("text=Try it out").click()
    models.locator("text=Execute").click()  # Swagger UI's own request, under connect-src 'self'
    expect(models.locator(".live-responses-table tbody .response-col_status")).to_contain_text(
        "200"
    )
    page.screenshot(path=SHOTS / "api-docs.png", full_page=True)


def test_a_search_the_server_refuses_says_why_in_place_of_the_results(
    live_server, chromium, model_version, ingest, compliance_officer
):
    """htmx leaves its target alone on a 4xx: swapped ends had left the former results
    showing, read as the answer, and nothing said why."""
    ingest(*DecisionPayloadFactory.build_batch(3))
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, live_server.url, "compliance_officer")
    page.goto(f"{live_server.url}/decisions/?model=credit")
    expect(page.locator(".count")).to_contain_text("3 decisions match")

    page.fill("input[name=score_min]", "0.9")
    page.fill("input[name=score_max]", "0.1")
    page.locator("input[name=score_max]").dispatch_event("change")

    results = page.locator("#results")
    expect(results.locator(".errors")).to_contain_text("score_min must not be above score_max")
    expect(results.locator(".count")).to_have_count(0)  # the former answer is gone
    expect(page.locator("header")).to_have_count(1)  # the error fills the results, not a page
    page.screenshot(path=SHOTS / "search-refused.png", full_page=True)


def test_a_search_refused_once_the_role_is_taken_away_says_so_in_place_of_the_results(
    live_server, chromium, model_version, ingest, compliance_officer
):
    """htmx swapped a 400, 409 or 429 and left its target alone on a 403 or 404: the
    former results stayed on screen, read as the answer to the new filters."""
    ingest(*DecisionPayloadFactory.build_batch(3))
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, live_server.url, "compliance_officer")
    page.goto(f"{live_server.url}/decisions/?model=credit")
    expect(page.locator(".count")).to_contain_text("3 decisions match")

    compliance_officer.groups.clear()  # read afresh on every request
    page.fill("input[name=score_min]", "0.5")
    page.locator("input[name=score_min]").dispatch_event("change")

    results = page.locator("#results")
    expect(results.locator(".error")).to_contain_text("403")
    expect(results.locator(".count")).to_have_count(0)  # the former answer is gone
    expect(page.locator("header")).to_have_count(1)  # the refusal fills the results
