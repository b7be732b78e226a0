"""Monitoring snapshots: asked for (a user's window, or the schedule's due ones), computed
on the `monitoring` queue, stored, then judged by the alert rules.

Each write runs in one transaction with its AuditEvent; Celery work is enqueued on commit.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import current_app
from django.db import transaction
from django.db.models import Max, Q
from django.db.models.functions import TruncDay
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.decisions.models import Decision, Outcome
from auditapp.filtering import refuse_unknown_fields
from auditapp.monitoring.alerts import evaluate_rules
from auditapp.monitoring.configuration import ensure_monitoring
from auditapp.monitoring.metrics import compute_window_metrics
from auditapp.monitoring.models import DAY, WEEK, MetricSnapshot
from auditapp.monitoring.windows import WINDOW_LENGTH, parse_period, window_floor, window_kind
from auditapp.registry.models import ModelVersion
from auditapp.replicas import complete_until, from_replica

log = logging.getLogger(__name__)

PENDING_GRACE = timedelta(minutes=15)


def _pending_snapshot(model_version, start, end, user=None) -> MetricSnapshot:
    snapshot, _ = MetricSnapshot.objects.update_or_create(
        model_version=model_version,
        window=window_kind(start, end),
        window_start=start,
        window_end=end,
        defaults={"status": MetricSnapshot.PENDING, "error": "", "requested_by": user},
    )
    return snapshot


def enqueue_snapshot(snapshot_id: int) -> None:
    """Sent by name (tasks.py imports this module); CELERY_TASK_ROUTES: the `monitoring` queue."""
    current_app.send_task("monitoring.compute_window", args=(snapshot_id,))


def request_snapshot(
    actor: roles.Actor, model_version: ModelVersion, data: Any, *, ip=None
) -> MetricSnapshot:
    """Compute a window now (on the monitoring queue); the snapshot is pending until then."""
    actor.require(roles.RUN_MONITORING)
    refuse_unknown_fields(data, ("from", "to"), "monitoring window")
    start, end = parse_period(data)
    with transaction.atomic():
        ensure_monitoring(model_version)
        user = actor.user if actor.user.is_authenticated else None
        snapshot = _pending_snapshot(model_version, start, end, user)
        record_event(
            "monitoring.requested",
            actor=actor,
            target=snapshot,
            ip=ip,
            model=model_version.registered_model.name,
            version=model_version.version,
            window=snapshot.window,
            start=start.isoformat(),
            end=end.isoformat(),
        )
        transaction.on_commit(lambda: enqueue_snapshot(snapshot.pk), robust=True)
    return snapshot


def compute_snapshot(snapshot_id: int) -> MetricSnapshot:
    """Compute a snapshot's figures, store them, then raise or resolve alerts on them."""
    snapshot = MetricSnapshot.objects.select_related("model_version__registered_model").get(
        pk=snapshot_id
    )
    MetricSnapshot.objects.filter(pk=snapshot.pk).update(
        status=MetricSnapshot.RUNNING, attempts=snapshot.attempts + 1
    )
    ensure_monitoring(snapshot.model_version)
    began = time.perf_counter()
    # Figures of past windows may lag the primary by the replica's replay delay. computed_at
    # then says up to when they are complete, so that an outcome recorded in the lag still
    # makes due_snapshots compute the window again.
    with from_replica() as alias:
        complete = complete_until(alias)
        data = compute_window_metrics(
            snapshot.model_version, snapshot.window_start, snapshot.window_end
        )
    with transaction.atomic():
        snapshot.data = data
        snapshot.decisions = data["decisions"]
        snapshot.status = MetricSnapshot.DONE
        snapshot.error = ""
        snapshot.computed_at = min(filter(None, [timezone.now(), complete]))
        snapshot.duration_ms = (time.perf_counter() - began) * 1000
        snapshot.attempts += 1
        snapshot.save(
            update_fields=[
                "data",
                "decisions",
                "status",
                "error",
                "computed_at",
                "duration_ms",
                "attempts",
            ]
        )
        evaluate_rules(snapshot)
    log.info(
        "monitoring.snapshot.done snapshot=%s model_version=%s window=%s n=%d ms=%.0f",
        snapshot.pk,
        snapshot.model_version_id,
        snapshot.window,
        snapshot.decisions,
        snapshot.duration_ms,
    )
    return snapshot


def fail_snapshot(snapshot_id: int, reason: str) -> None:
    """A final failure, written on the row (the page and the API show it)."""
    MetricSnapshot.objects.filter(pk=snapshot_id).update(
        status=MetricSnapshot.FAILED, error=reason[:5000], computed_at=timezone.now()
    )


def due_snapshots(now: datetime | None = None) -> list[int]:
    """Create (pending) the snapshots the schedule owes, and return their ids: the last
    completed hour, day and week of every non-archived version with decisions in it, day /
    week windows whose decisions received outcomes after they were computed, and snapshots
    left pending for more than 15 minutes."""

    now = now or timezone.now()
    wanted: set[tuple[int, datetime, datetime]] = set()
    for kind, length in WINDOW_LENGTH.items():
        end = window_floor(kind, now)
        start = end - length
        versions = (
            Decision.objects.served()
            .filter(predicted_at__gte=start, predicted_at__lt=end)
            .exclude(model_version__stage=ModelVersion.ARCHIVED)
            .values_list("model_version_id", flat=True)
            .distinct()
        )
        wanted.update((version_id, start, end) for version_id in versions)
    existing = _existing(wanted)
    due = {key for key in wanted if key not in existing}
    late = (
        Outcome.objects.filter(recorded_at__gte=now - timedelta(days=2))
        .annotate(day=TruncDay("decision__predicted_at", tzinfo=UTC))
        .values_list("decision__model_version_id", "day")
        .annotate(last=Max("recorded_at"))
    )
    for version_id, day, last in late:
        for kind in (DAY, WEEK):
            start = window_floor(kind, day)
            key = (version_id, start, start + WINDOW_LENGTH[kind])
            computed = _existing({key}).get(key)
            if key[2] <= now and computed is not None and computed < last:
                due.add(key)
    created = [_due_snapshot(*key).pk for key in sorted(due)]
    return created + stranded_snapshots(now, exclude=created)


def stranded_snapshots(now: datetime, exclude: list[int]) -> list[int]:
    """Snapshots still pending long after they were asked for: their message never reached
    a worker (the broker lost it, or was down). Computing twice is harmless."""
    return list(
        MetricSnapshot.objects.filter(
            status=MetricSnapshot.PENDING, created_at__lt=now - PENDING_GRACE
        )
        .exclude(pk__in=exclude)
        .order_by("pk")
        .values_list("pk", flat=True)[:100]
    )


def _existing(keys: set[tuple[int, datetime, datetime]]) -> dict[tuple, datetime | None]:
    """computed_at (or None while pending) of the snapshots that exist for these keys."""
    if not keys:
        return {}
    q = Q()
    for version_id, start, end in keys:
        q |= Q(model_version_id=version_id, window_start=start, window_end=end)
    rows = MetricSnapshot.objects.filter(q).values_list(
        "model_version_id", "window_start", "window_end", "computed_at", "status"
    )
    return {(v, s, e): computed for v, s, e, computed, _ in rows}


def _due_snapshot(version_id: int, start: datetime, end: datetime) -> MetricSnapshot:
    model_version = ModelVersion.objects.get(pk=version_id)
    with transaction.atomic():
        ensure_monitoring(model_version)
        return _pending_snapshot(model_version, start, end)
