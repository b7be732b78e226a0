"""Celery tasks of monitoring: thin wrappers over snapshots.py and delivery.py; names are a
wire contract."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from auditapp.monitoring import delivery, snapshots
from auditapp.tasking import DATABASE_ERRORS, TRANSIENT_ERRORS, AttestTask, describe

log = logging.getLogger(__name__)

QUEUE = "monitoring"
SOFT_TIME_LIMIT = 600  # a week of a busy version; below the broker's visibility timeout
HARD_TIME_LIMIT = 660
MAX_RETRIES = 3
DELIVERY_RETRIES = 5
BACKOFF = 10  # seconds before the first retry, doubled up to AttestTask's 300


def _snapshot_failed(task, exc, args, kwargs) -> dict:
    """A failure that will not go away, written on the row (the page and the API show it)."""
    snapshot_id = task.arguments(args, kwargs)["snapshot_id"]
    if isinstance(exc, SoftTimeLimitExceeded):
        reason = "time limit exceeded"
    elif isinstance(exc, DATABASE_ERRORS):
        reason = f"database unavailable: {exc}"
    else:
        reason = describe(exc)
    snapshots.fail_snapshot(snapshot_id, reason)
    return {"snapshot": snapshot_id, "status": "failed"}


@shared_task(
    base=AttestTask,
    name="monitoring.compute_window",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=HARD_TIME_LIMIT,
    max_retries=MAX_RETRIES,
    retry_backoff=BACKOFF,
    on_final_failure=_snapshot_failed,
)
def compute_window(snapshot_id: int) -> dict:
    """Compute one snapshot."""
    snapshot = snapshots.compute_snapshot(snapshot_id)
    return {"snapshot": snapshot_id, "status": snapshot.status, "decisions": snapshot.decisions}


@shared_task(
    base=AttestTask,
    name="monitoring.compute_due",
    acks_late=True,
    soft_time_limit=120,
    time_limit=150,
    max_retries=0,  # beat sends it again
)
def compute_due() -> int:
    """Celery beat: queue the windows the schedule owes (see snapshots.due_snapshots)."""
    due = snapshots.due_snapshots()
    for snapshot_id in due:
        snapshots.enqueue_snapshot(snapshot_id)
    if due:
        log.info("monitoring.compute_due.queued n=%d", len(due))
    return len(due)


def _delivery_failed(channel: str):
    def failed(task, exc, args, kwargs) -> str:
        """Written on the alert: unreachable after every try, or refused (a 4xx, a bad URL:
        another try would fail the same way)."""
        if isinstance(exc, task.transient_errors):
            reason = f"{exc} (after {task.request.retries + 1} tries)"
        else:
            reason = describe(exc)
        delivery.delivery_failed(task.arguments(args, kwargs)["alert_id"], channel, reason)
        return "failed"

    return failed


DELIVERY = {
    "base": AttestTask,
    "acks_late": True,
    "soft_time_limit": 60,
    "time_limit": 90,
    "max_retries": DELIVERY_RETRIES,
    "retry_backoff": BACKOFF,
    # The receiver away (or our database, our broker) is worth another try.
    "transient_errors": (delivery.TransientDeliveryError, *TRANSIENT_ERRORS),
}


@shared_task(
    name="monitoring.deliver_webhook", on_final_failure=_delivery_failed("webhook"), **DELIVERY
)
def deliver_webhook(alert_id: int) -> str:
    delivery.send_webhook(alert_id)
    return "sent"


@shared_task(
    name="monitoring.deliver_email", on_final_failure=_delivery_failed("email"), **DELIVERY
)
def deliver_email(alert_id: int) -> str:
    delivery.send_email(alert_id)
    return "sent"
