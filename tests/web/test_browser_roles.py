"""Each role's main job, walked in a real Chromium on the quick start's demo data.

The demo is loaded as `make run` loads it (`load_demo`), a real Celery worker explains it
and runs the jobs the pages start (verification, the report). Then each demo login does
what it is there for, and the facts on the pages are checked against the database:

- the compliance officer finds the decisions declined in the last day and reads why,
  verifies the chain and exports the compliance report, which names the input that
  drifted and the day it did;
- the domain expert disagrees with a decision and leaves feedback, and finds it queued;
- the auditor reads in the audit log what the compliance officer did;
- the ML engineer sees fairness for the protected attribute as the latest window has it;
- the administrator sees what needs attention today, and the warning that the model
  uses a protected attribute as an input.

Screenshots go to test-artifacts/screenshots/roles-*.png for a person to look at.
"""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta
from io import StringIO
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import expect

from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from auditapp.decisions.sealing import seal_new_records
from auditapp.demo.management.commands.load_demo import demo_password, downturn_start
from auditapp.monitoring.documents import SnapshotDocument
from auditapp.monitoring.models import MetricSnapshot
from auditapp.registry.models import ModelVersion
from auditapp.reviews.models import ReviewCase
from explain.models import Explanation
from tests.web.test_browser import SHOTS, chromium  # noqa: F401  (the watched browser)
from tests.workers import Worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)
DEMO_DECISIONS = 300
WALKED_QUEUES = ("explain", "explain-priority", "verify", "reports", "monitoring", "maintenance")
VIEWPORT = {"width": 1440, "height": 1000}


def log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", demo_password(username))
    page.click("button[type=submit]")
    expect(page.locator(".who")).to_contain_text(username)


@pytest.fixture
def demo(role_groups, media_root, tmp_path, monkeypatch):
    """The demo loaded and explained by a real worker, which keeps serving the walk.

    The walk's demo is small (about 20 decisions a day): the worker judges drift on
    days of 15 decisions or more, where production would want 100. The worker serves the
    queues of what the walk reads (SHAP's reasons, verification, the report, monitoring),
    not LIME's or the counterfactuals': computing those for 300 decisions kept the walk's
    jobs waiting behind them, about a minute of CI's CPU that nothing read
    (tests/web/test_browser.py and test_browser_counterfactuals.py walk those).
    """
    monkeypatch.setenv("ATTEST_MONITORING_MIN_DRIFT_DECISIONS", "15")
    call_command("load_demo", "--decisions", str(DEMO_DECISIONS), stdout=StringIO())
    worker = Worker(media_root, tmp_path / "worker.log", queues=WALKED_QUEUES)
    try:
        wait_until(
            lambda: (
                not Explanation.objects.filter(
                    method="shap", status__in=[Explanation.PENDING, Explanation.RUNNING]
                ).exists()
            ),
            "the demo's SHAP explanations",
            timeout=300,
        )
        yield ModelVersion.objects.get(registered_model__name="credit")
    finally:
        worker.stop()


def test_each_role_does_its_main_job_on_the_demo(live_server, chromium, demo):  # noqa: F811
    base, version = live_server.url, demo
    adverse = version.parsed_schema.target.adverse_class
    since = timezone.now() - timedelta(days=1)
    declined = Decision.objects.filter(prediction=adverse, predicted_at__gte=since)
    expected = declined.count()
    assert expected > 0

    # The compliance officer: the decisions declined in the last day, and why.
    page = chromium.new_page(viewport=VIEWPORT)
    log_in(page, base, "compliance")
    query = urlencode(
        {"model": "credit", "prediction": adverse, "from": since.strftime("%Y-%m-%dT%H:%M")}
    )
    page.goto(f"{base}/decisions/?{query}")
    expect(page.locator(".count")).to_contain_text(f"{expected} decision")
    rows = page.locator("table.results tbody tr")
    expect(rows).to_have_count(min(expected, 50))
    expect(rows.first.locator(".reasons .reason").first).to_contain_text(" = ")
    page.screenshot(path=SHOTS / "roles-compliance-declined.png", full_page=True)

    rows.first.locator("a").first.click()
    reasons = page.locator(".reasons li")
    expect(reasons.first).to_contain_text(" = ")
    decision_id = int(page.url.rstrip("/").split("/")[-1])
    assert Decision.objects.get(pk=decision_id).prediction == adverse
    page.screenshot(path=SHOTS / "roles-compliance-decision.png", full_page=True)

    # ... verifies the chain and exports the compliance report.
    seal_new_records()  # as beat does every minute under `make run`
    page.goto(f"{base}/audit/")
    page.click("text=Verify the whole chain now")
    verdict = page.locator("#verification")
    expect(verdict).to_contain_text("Verified.", timeout=120_000)
    expect(verdict).to_contain_text(f"{DEMO_DECISIONS} decisions")
    page.goto(f"{base}/reports/")
    page.select_option("select[name=target]", f"credit:{version.version}")
    last_day = timezone.now().date()
    page.fill("input[name=from]", (last_day - timedelta(days=14)).isoformat())
    page.fill("input[name=to]", last_day.isoformat())
    page.select_option("select[name=format]", "pdf")
    page.click("text=Request report")
    download_link = page.locator("table.reports tbody tr").first.locator("a:has-text('Download')")
    expect(download_link).to_be_visible(timeout=180_000)
    with page.expect_download() as download:
        download_link.click()
    assert download.value.suggested_filename.endswith(".pdf")
    text = " ".join(
        subprocess.run(
            ["pdftotext", download.value.path(), "-"], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    first_day = downturn_start(version.created_at)
    # The downturn cut incomes and raised debt ratios on its days: the report's table of
    # what drifted names one of them on one of its days at least. Days of some 20
    # decisions drift by chance too (PSI up to ~0.55 here), so the verdict, which names
    # each feature's worst days, may name a chance day before a downturn day.
    days = "|".join(f"{d.day} {d:%b %Y}" for d in (first_day, first_day + timedelta(days=1)))
    moved = r"(Annual income \(EUR\)|Debt-to-income ratio)"
    assert "drifted on" in text, text
    # Anchored on the table's title alone: pdftotext may set the wide table before it
    # between the title and its column heads ("what drifted day Annual income (EUR)
    # 0.217 0.288 0.424 PSI p-value ...").
    assert re.search(rf"what drifted .*{moved} ({days}) \d\.\d+ ", text), text
    page.screenshot(path=SHOTS / "roles-compliance-report.png", full_page=True)

    # The domain expert disagrees with a declined decision, then finds it in the queue.
    page = chromium.new_page(viewport=VIEWPORT)
    log_in(page, base, "expert")
    page.goto(f"{base}/decisions/{decision_id}/")
    page.check("input[name=verdict][value=disagree]")
    page.fill("textarea[name=comment]", "Income is seasonal; the last quarter was typical.")
    page.click("text=Give feedback")
    expect(page.locator("ul.feedback li").first).to_contain_text("Income is seasonal")
    case = ReviewCase.objects.get(decision_id=decision_id)
    page.goto(f"{base}/review/?model=credit")
    expect(page.locator(f"tr[data-case='{case.pk}']")).to_be_visible()
    page.screenshot(path=SHOTS / "roles-expert-queue.png", full_page=True)

    # The auditor reads what the compliance officer did.
    page = chromium.new_page(viewport=VIEWPORT)
    log_in(page, base, "auditor")
    page.goto(f"{base}/audit/?actor=compliance")
    actions = set(
        AuditEvent.objects.filter(actor_name="compliance").values_list("action", flat=True)
    )
    assert {"decisions.searched", "decision.viewed"} <= actions
    events = page.locator("#events tbody tr")
    expect(events.first).to_be_visible()
    log = page.locator("#events")
    expect(log).to_contain_text(
        f"compliance searched decisions of model credit (prediction = {adverse}"
    )
    expect(log).to_contain_text(f"compliance viewed decision {decision_id}")
    expect(log).to_contain_text("compliance verified the chain: it held")
    expect(log).to_contain_text("compliance downloaded compliance report")
    assert events.count() == min(AuditEvent.objects.filter(actor_name="compliance").count(), 50)
    page.screenshot(path=SHOTS / "roles-auditor-log.png", full_page=True)

    # The ML engineer: drift, and fairness for the protected attribute, as computed.
    wait_until(
        lambda: not MetricSnapshot.objects.exclude(status=MetricSnapshot.DONE).exists(),
        "the demo's daily monitoring windows",
        timeout=300,
    )
    latest = (
        MetricSnapshot.objects.filter(model_version=version, window="day")
        .order_by("-window_start")
        .first()
    )
    document = SnapshotDocument.from_document(latest.data)
    page = chromium.new_page(viewport=VIEWPORT)
    log_in(page, base, "mlengineer")
    page.goto(f"{base}/models/credit/versions/{version.version}/monitoring/")
    sex = page.locator("#fairness tbody tr", has_text="sex")
    impact = document.fairness["sex"].disparate_impact_ratio
    expect(sex.locator("td").nth(3)).to_contain_text(f"{impact:.3f}")
    page.screenshot(path=SHOTS / "roles-mlengineer-monitoring.png", full_page=True)
    page.locator("#fairness").screenshot(path=SHOTS / "roles-mlengineer-fairness.png")

    # The administrator: what needs attention today, and the protected input warned of.
    page = chromium.new_page(viewport=VIEWPORT)
    log_in(page, base, "admin")
    page.goto(f"{base}/")
    backlog = ReviewCase.objects.exclude(state=ReviewCase.RESOLVED).count()
    row = page.locator("table.needs tbody tr", has_text="credit")
    expect(row.locator("td").nth(3)).to_have_text(str(backlog))
    page.screenshot(path=SHOTS / "roles-admin-overview.png", full_page=True)
    page.goto(f"{base}/models/credit/versions/{version.version}/")
    expect(page.locator("body")).to_contain_text(re.compile(r"protected", re.IGNORECASE))
