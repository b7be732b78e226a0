"""A declined decision's counterfactuals in a real Chromium: the decision page's "What would
change the decision" section with its sentences and highlighted changes, and the notice
(a PDF made by a real worker) carrying the nearest one."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest
from playwright.sync_api import expect

from auditapp.accounts import roles
from auditapp.celery import app as celery_app
from auditapp.decisions.models import Decision
from auditapp.decisions.services import record_decisions
from auditapp.registry.services import load_model
from explain import batches, publishing, tasks
from explain.counterfactual_presenters import nearest_sentence
from explain.models import CounterfactualWork
from tests.factories import applicant_inputs
from tests.web.test_browser import SHOTS, chromium, log_in  # noqa: F401  (the watched browser)
from tests.workers import Worker

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_declined_decision_shows_what_would_change_it_and_its_notice_says_so(
    live_server,
    chromium,  # noqa: F811
    model_version,
    ml_engineer,
    compliance_officer,
    media_root,
    tmp_path,
):
    model = load_model(model_version)
    rows = [applicant_inputs(n) for n in range(60)]
    frame = pd.DataFrame(rows)[model_version.parsed_schema.names]
    bad = list(model.classes_).index("bad")
    payloads = [
        {
            "model": "credit",
            "version": "1",
            "request_id": f"web-cf-{n}",
            "inputs": row,
            "prediction": str(label),
            "score": round(float(score), 6),
            "predicted_at": "2026-01-05T10:00:00Z",
        }
        for n, (row, label, score) in enumerate(
            zip(rows, model.predict(frame), model.predict_proba(frame)[:, bad], strict=True)
        )
    ]
    results = record_decisions(roles.Actor(user=ml_engineer), {"decisions": payloads}, source="api")
    publishing.wait_until_published()
    celery_app.control.purge()  # computed here; the worker below makes the notice
    ids = [r["id"] for r in results]
    batches.run_batch(model_version.pk, "shap", ids)
    declined = sorted(CounterfactualWork.objects.values_list("decision_id", flat=True))
    tasks.counterfactual_batch.run(model_version.pk, declined)
    decision_id = next(
        w.decision_id
        for w in CounterfactualWork.objects.select_related("result").order_by("decision_id")
        if w.result and w.result.found >= 2
    )
    decision = Decision.objects.get(pk=decision_id)
    expected = nearest_sentence(decision)
    assert expected

    worker = Worker(media_root, tmp_path / "worker.log")
    try:
        page = chromium.new_page(viewport={"width": 1440, "height": 1000})
        log_in(page, live_server.url, "compliance_officer")
        page.goto(f"{live_server.url}/decisions/{decision_id}/")
        section = page.locator("section.counterfactuals")
        expect(section.locator("h2")).to_contain_text("What would change the decision")
        expect(section.locator(".cf-sentences li")).to_have_count(
            decision.counterfactual_work.result.found
        )
        expect(section).to_contain_text(expected)
        expect(section.locator("td.cf-changed mark").first).to_be_visible()
        expect(section.locator(".cf-quality")).to_contain_text("Validity 1.0")
        page.screenshot(path=SHOTS / "counterfactuals-decision.png", full_page=True)

        page.select_option("form.notice-request select[name=format]", "pdf")
        page.click("form.notice-request button[type=submit]")
        download_link = page.locator("table.reports tbody tr").first.locator(
            "a:has-text('Download')"
        )
        expect(download_link).to_be_visible(timeout=180_000)
        with page.expect_download() as download:
            download_link.click()
        text = " ".join(
            subprocess.run(
                ["pdftotext", download.value.path(), "-"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
        )
        assert "What would have changed the decision" in text
        assert expected in text, text
    finally:
        worker.stop()
