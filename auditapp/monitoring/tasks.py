"""Celery tasks of monitoring: thin wrappers over services; names are a wire contract."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError

from auditapp.monitoring import services

log = logging.getLogger(__name__)

QUEUE = "monitoring"
SOFT_TIME_LIMIT = 600  # a week of a busy version; below the broker's visibility timeout
HARD_TIME_LIMIT = 660
MAX_RETRIES = 3
DELIVERY_RETRIES = 5
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


def _backoff(retries: int) -> int:
    return min(300, 10 * 2**retries)


@shared_task(
    name="monitoring.compute_window",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=HARD_TIME_LIMIT,
    max_retries=MAX_RETRIES,
)
def compute_window(self, snapshot_id: int) -> dict:
    """Compute one snapshot; a failure that will not go away is written on the row."""
    try:
        snapshot = services.compute_snapshot(snapshot_id)
    except TRANSIENT_ERRORS as exc:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
        services.fail_snapshot(snapshot_id, f"database unavailable: {exc}")
        return {"snapshot": snapshot_id, "status": "failed"}
    except SoftTimeLimitExceeded:
        services.fail_snapshot(snapshot_id, "time limit exceeded")
        return {"snapshot": snapshot_id, "status": "failed"}
    except Exception as exc:
        log.exception("monitoring.snapshot.failed snapshot=%s", snapshot_id)
        services.fail_snapshot(snapshot_id, f"{type(exc).__name__}: {exc}")
        return {"snapshot": snapshot_id, "status": "failed"}
    return {"snapshot": snapshot_id, "status": snapshot.status, "decisions": snapshot.decisions}


@shared_task(
    name="monitoring.compute_due",
    acks_late=True,
    soft_time_limit=120,
    time_limit=150,
)
def compute_due() -> int:
    """Celery beat: queue the windows the schedule owes (see services.due_snapshots)."""
    due = services.due_snapshots()
    for snapshot_id in due:
        services.enqueue_snapshot(snapshot_id)
    if due:
        log.info("monitoring.compute_due.queued n=%d", len(due))
    return len(due)


def _deliver(task, channel: str, send, alert_id: int) -> str:
    try:
        send(alert_id)
    except services.TransientDeliveryError as exc:
        if task.request.retries < task.max_retries:
            raise task.retry(exc=exc, countdown=_backoff(task.request.retries)) from exc
        services.delivery_failed(
            alert_id, channel, f"{exc} (after {task.request.retries + 1} tries)"
        )
        return "failed"
    except Exception as exc:  # a 4xx, a bad URL: another try would fail the same way
        log.exception("monitoring.%s.failed alert=%s", channel, alert_id)
        services.delivery_failed(alert_id, channel, f"{type(exc).__name__}: {exc}")
        return "failed"
    return "sent"


@shared_task(
    name="monitoring.deliver_webhook",
    bind=True,
    acks_late=True,
    soft_time_limit=60,
    time_limit=90,
    max_retries=DELIVERY_RETRIES,
)
def deliver_webhook(self, alert_id: int) -> str:
    return _deliver(self, "webhook", services.send_webhook, alert_id)


@shared_task(
    name="monitoring.deliver_email",
    bind=True,
    acks_late=True,
    soft_time_limit=60,
    time_limit=90,
    max_retries=DELIVERY_RETRIES,
)
def deliver_email(self, alert_id: int) -> str:
    return _deliver(self, "email", services.send_email, alert_id)
