"""Celery tasks for reports: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from auditapp.reports import services
from auditapp.tasking import AttestTask

QUEUE = "reports"  # given at enqueue time (services.enqueue_generation) and in beat
SOFT_TIME_LIMIT = 900  # a 100,000-decision report takes seconds; below the visibility timeout
HARD_TIME_LIMIT = 960
MAX_RETRIES = 3


def _report_failed(task, exc, args, kwargs) -> str:
    """Retries used up (other errors the service writes itself): the reason on the row."""
    services.fail_report(task.arguments(args, kwargs)["report_id"], exc)
    return "failed"


@shared_task(
    base=AttestTask,
    name="reports.generate",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=HARD_TIME_LIMIT,
    max_retries=MAX_RETRIES,
    retry_backoff=5,
    on_final_failure=_report_failed,
)
def generate_report(report_id: int) -> str:
    """Generate one report; the service writes every failure but a transient one on the row."""
    return services.generate_report(report_id).status


@shared_task(
    base=AttestTask,
    name="reports.resend_pending",
    acks_late=True,
    soft_time_limit=60,
    time_limit=90,
    max_retries=0,  # beat sends it again
)
def resend_pending() -> int:
    """Beat: re-send reports whose generation message was lost (e.g. the broker was down)."""
    return services.resend_pending(settings.ATTEST_REPORT_RESEND_AFTER)
