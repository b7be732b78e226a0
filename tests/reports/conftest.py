"""A model version with a period of explained decisions, outcomes and reviews, and helpers."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.decisions.models import Decision
from auditapp.decisions.outcomes import record_outcomes
from auditapp.reports import services
from auditapp.reports.models import Report
from auditapp.reviews.services import flag_decision, submit_feedback
from explain import tasks
from tests.factories import DecisionPayloadFactory

DAYS = 3
PER_DAY = (5, 8, 3)  # decisions on each day of the period: distinct counts per day
LIME_DECISIONS = 4


@dataclass
class Period:
    start: datetime
    end: datetime
    ids: list[int]  # the decisions inside the period
    outside: list[int]  # decisions of the same version just before and after it

    def body(self, fmt: str = "json") -> dict:
        return report_body(self.start, self.end, fmt)


def report_body(start: datetime, end: datetime, fmt: str) -> dict:
    """A request for the credit model's compliance report over [start, end)."""
    return {
        "kind": "model_compliance",
        "model": "credit",
        "version": "1",
        "from": start.isoformat(),
        "to": end.isoformat(),
        "format": fmt,
    }


def explain(ids: list[int], model_version, methods=("shap",)) -> None:
    """Run the explanation tasks the way a worker would (no broker in these tests)."""
    for method in methods:
        tasks.explain_batch.run(model_version.pk, method, ids)


@pytest.fixture
def period(model_version, ingest, ml_engineer, domain_expert) -> Period:
    """16 decisions over three UTC days (5, 8, 3 a day), SHAP for all, LIME for four,
    outcomes for ten, expert verdicts on three and one flagged case; plus two decisions
    of the same version outside the period."""
    start = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start -= timedelta(days=DAYS)
    moments = [
        start + timedelta(days=day, hours=1, minutes=7 * n)
        for day, count in enumerate(PER_DAY)
        for n in range(count)
    ]
    before, after = start - timedelta(hours=2), start + timedelta(days=DAYS, minutes=1)
    payloads = [DecisionPayloadFactory(predicted_at=m.isoformat()) for m in moments]
    extra = [DecisionPayloadFactory(predicted_at=before.isoformat())]
    if after < timezone.now():
        extra.append(DecisionPayloadFactory(predicted_at=after.isoformat()))
    results = ingest(*payloads, *extra)
    ids = [r["id"] for r in results[: len(payloads)]]
    outside = [r["id"] for r in results[len(payloads) :]]
    explain(ids + outside, model_version)
    explain(ids[:LIME_DECISIONS], model_version, methods=("lime",))
    decisions = list(Decision.objects.filter(pk__in=ids).order_by("pk"))
    observed = timezone.now().isoformat()
    record_outcomes(
        roles.Actor(user=ml_engineer),
        {
            "outcomes": [
                {
                    "decision_id": d.pk,
                    "model": "credit",
                    "outcome": "bad" if n % 3 == 0 else "good",
                    "observed_at": observed,
                }
                for n, d in enumerate(decisions[:10])
            ]
        },
    )
    expert = roles.Actor(user=domain_expert)
    for verdict, d in zip(("agree", "agree", "disagree"), decisions[:3], strict=True):
        submit_feedback(expert, d, {"verdict": verdict})
    flag_decision(expert, decisions[5], "Looks odd")
    return Period(start=start, end=start + timedelta(days=DAYS), ids=ids, outside=outside)


@pytest.fixture
def generate(compliance_officer):
    """Request a report as `user` (the compliance officer by default) and generate it now."""

    def make(body: dict, user=None) -> Report:
        actor = roles.Actor(user=user or compliance_officer)
        report = services.request_report(actor, body)
        return services.generate_report(report.pk)

    return make


class RequestedTogether:
    """The same report requested in each format first, then each generated the first time a
    test reads it: between the requests and the generations nothing changes (a request is
    itself an audit event, which section 9 counts), and a test that reads the JSON and the
    CSV does not wait for a PDF's layout (seconds each)."""

    FORMATS = ("json", "csv", "pdf")

    def __init__(self, actor: roles.Actor, body: Callable[[str], dict]):
        self.requested = {f: services.request_report(actor, body(f)) for f in self.FORMATS}
        self.generated: dict[str, Report] = {}

    def __getitem__(self, fmt: str) -> Report:
        if fmt not in self.generated:
            report = services.generate_report(self.requested[fmt].pk)
            assert report.status == Report.DONE, report.error
            self.generated[fmt] = report
        return self.generated[fmt]


def pdf_text(report: Report) -> str:
    """The PDF's text as pdftotext reads it (layout kept, so table rows stay on one line)."""
    path = Path(report.file.path)
    out = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    )
    return out.stdout


def read_file(report: Report) -> bytes:
    with report.file.open("rb") as handle:
        return handle.read()
