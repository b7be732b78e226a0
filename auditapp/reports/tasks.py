"""Celery tasks for reports: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from auditapp.reports import services

QUEUE = "reports"  # given at enqueue time (services.enqueue_generation) and in beat
SOFT_TIME_LIMIT = 900  # a 100,000-decision report takes seconds; below the visibility timeout
HARD_TIME_LIMIT = 960
MAX_RETRIES = 3


@shared_task(
    bind=True,
    name="reports.generate",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=HARD_TIME_LIMIT,
    max_retries=MAX_RETRIES,
)
def generate_report(self, report_id: int) -> str:
    """Generate one report; only transient database errors are retried, then written as final."""
    try:
        return services.generate_report(report_id).status
    except services.TRANSIENT_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            services.fail_report(report_id, exc)
            return "failed"
        raise self.retry(exc=exc, countdown=5 * 2**self.request.retries) from exc


@shared_task(name="reports.resend_pending", acks_late=True, soft_time_limit=60, time_limit=90)
def resend_pending() -> int:
    """Beat: re-send reports whose generation message was lost (e.g. the broker was down)."""
    return services.resend_pending(settings.ATTEST_REPORT_RESEND_AFTER)
