"""Monitoring writes: snapshots on demand and on schedule, alert rules and alerts, settings.

Views, API views and tasks call these; each write runs in one transaction with its
AuditEvent, and Celery work is enqueued on commit.
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max, Q
from django.db.models.functions import TruncDay
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.decisions.models import Decision, Outcome
from auditapp.errors import Conflict, InvalidInput
from auditapp.monitoring import thresholds
from auditapp.monitoring.metrics import compute_window_metrics
from auditapp.monitoring.models import (
    CUSTOM,
    DAY,
    HOUR,
    WEEK,
    Alert,
    AlertRule,
    MetricSnapshot,
    MonitoringSettings,
)
from auditapp.registry.models import ModelVersion

log = logging.getLogger(__name__)

WINDOW_LENGTH = {HOUR: timedelta(hours=1), DAY: timedelta(days=1), WEEK: timedelta(weeks=1)}
MAX_PERIOD = timedelta(days=366)
PENDING_GRACE = timedelta(minutes=15)
SYSTEM = "system (monitoring)"
COMPARISON_SIGNS = dict(AlertRule.COMPARISONS)


def default_rules() -> list[tuple[str, str, str, float]]:
    """(name, metric, comparison, threshold) of the rules every version gets, on day
    windows; names and thresholds come from thresholds.py."""
    return [
        (
            f"Input drift: PSI above {thresholds.PSI_SHIFT:g}",
            "input_drift_psi",
            AlertRule.GT,
            thresholds.PSI_SHIFT,
        ),
        (
            f"Disparate impact below {thresholds.FOUR_FIFTHS:g} (four-fifths rule)",
            "disparate_impact_ratio",
            AlertRule.LT,
            thresholds.FOUR_FIFTHS,
        ),
        (
            f"ROC AUC more than {thresholds.ROC_AUC_DROP:g} below the reference",
            "roc_auc_drop",
            AlertRule.GT,
            thresholds.ROC_AUC_DROP,
        ),
        (
            f"Explanation failure rate above {thresholds.EXPLANATION_FAILURE_RATE * 100:g} %",
            "explanation_failure_rate",
            AlertRule.GT,
            thresholds.EXPLANATION_FAILURE_RATE,
        ),
    ]


# --- windows -------------------------------------------------------------------------------


def window_floor(kind: str, moment: datetime) -> datetime:
    """The start (UTC) of the hour, day or week (from Monday) that contains `moment`."""
    moment = moment.astimezone(UTC)
    if kind == HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if kind == DAY else day - timedelta(days=day.weekday())


def window_kind(start: datetime, end: datetime) -> str:
    """hour / day / week when [start, end) is exactly one such window, else custom."""
    for kind, length in WINDOW_LENGTH.items():
        if end - start == length and window_floor(kind, start) == start:
            return kind
    return CUSTOM


def parse_moment(value: Any, field: str) -> datetime:
    moment = parse_datetime(value) if isinstance(value, str) else None
    if moment is None:
        raise InvalidInput(f"{field} must be an ISO-8601 date-time, e.g. 2026-11-20T00:00:00Z.")
    if timezone.is_naive(moment):
        raise InvalidInput(f"{field} must carry a time zone (e.g. Z for UTC).")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # year 1 east of Greenwich, year 9999 west of it
        raise InvalidInput(f"{field} is outside the years 1 to 9999 in UTC.") from None


def parse_period(data: Any) -> tuple[datetime, datetime]:
    """`{"from", "to"}` of a request: time-zone aware, in order, at most a year apart."""
    if not isinstance(data, dict):
        raise InvalidInput('The body must be an object: {"from": ..., "to": ...}.')
    start, end = parse_moment(data.get("from"), "from"), parse_moment(data.get("to"), "to")
    if end <= start:
        raise InvalidInput("to must be after from.")
    if end - start > MAX_PERIOD:
        raise InvalidInput("A monitoring window spans at most 366 days.")
    return start, end


# --- defaults ------------------------------------------------------------------------------


def ensure_monitoring(model_version: ModelVersion) -> MonitoringSettings:
    """The version's monitoring settings and default alert rules, created on first need."""
    config, _ = MonitoringSettings.objects.get_or_create(model_version=model_version)
    if not AlertRule.objects.filter(model_version=model_version, is_default=True).exists():
        AlertRule.objects.bulk_create(
            AlertRule(
                name=name,
                metric=metric,
                comparison=comparison,
                threshold=threshold,
                window=DAY,
                model_version=model_version,
                is_default=True,
            )
            for name, metric, comparison, threshold in default_rules()
        )
    return config


# --- snapshots -----------------------------------------------------------------------------


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
    data = compute_window_metrics(
        snapshot.model_version, snapshot.window_start, snapshot.window_end
    )
    with transaction.atomic():
        snapshot.data = data
        snapshot.decisions = data["decisions"]
        snapshot.status = MetricSnapshot.DONE
        snapshot.error = ""
        snapshot.computed_at = timezone.now()
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
            Decision.objects.filter(predicted_at__gte=start, predicted_at__lt=end)
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


# --- alert rules ---------------------------------------------------------------------------


def metric_values(metric: str, data: dict) -> dict[str, float]:
    """The values of one rule metric in a snapshot, by subject (a feature, or "")."""
    performance = data.get("performance") or {}
    if metric == "input_drift_psi":
        values = {name: entry.get("psi") for name, entry in data.get("drift", {}).items()}
    elif metric == "score_drift_psi":
        values = {"": data.get("score_drift", {}).get("psi")}
    elif metric == "attribution_ndcg":
        values = {"": data.get("attribution_drift", {}).get("ranking_ndcg")}
    elif metric in (
        "disparate_impact_ratio",
        "demographic_parity_difference",
        "equalized_odds_difference",
    ):
        values = {name: entry.get(metric) for name, entry in data.get("fairness", {}).items()}
    elif metric == "explanation_failure_rate":
        values = {"": data.get("explanations", {}).get("failure_rate")}
    else:
        values = {"": performance.get(metric)}
    return {
        k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)
    }


def rules_for(model_version: ModelVersion, window: str):
    return AlertRule.objects.filter(
        Q(model_version=model_version)
        | Q(model_version=None, registered_model=model_version.registered_model_id)
        | Q(model_version=None, registered_model=None),
        enabled=True,
        window=window,
    )


def _is_latest(snapshot: MetricSnapshot) -> bool:
    return not MetricSnapshot.objects.filter(
        model_version=snapshot.model_version_id,
        window=snapshot.window,
        status=MetricSnapshot.DONE,
        window_start__gt=snapshot.window_start,
    ).exists()


def evaluate_rules(snapshot: MetricSnapshot) -> list[Alert]:
    """Raise an alert once per breach, keep it while the breach lasts, resolve it when the
    metric is back within bounds. Only the latest window of each kind is judged, and only
    when it holds enough decisions for its figures to mean something."""
    if snapshot.window == CUSTOM or not _is_latest(snapshot):
        return []
    if snapshot.decisions < settings.ATTEST_MONITORING_MIN_DECISIONS:
        return []
    rules = list(rules_for(snapshot.model_version, snapshot.window))
    active = {
        (alert.rule_id, alert.subject): alert
        for alert in Alert.objects.select_for_update()
        .filter(model_version=snapshot.model_version, rule__in=rules)
        .active()
    }
    raised = []
    for rule in rules:
        for subject, value in metric_values(rule.metric, snapshot.data).items():
            alert = active.get((rule.pk, subject))
            if rule.breached(value):
                if alert is None:
                    raised.append(_raise(rule, snapshot, subject, value))
                else:
                    alert.last_value, alert.last_seen_at = value, timezone.now()
                    alert.save(update_fields=["last_value", "last_seen_at"])
            elif alert is not None:
                _resolve(alert, value)
    return raised


def _raise(rule: AlertRule, snapshot: MetricSnapshot, subject: str, value: float) -> Alert:
    model_version = snapshot.model_version
    what = rule.get_metric_display() + (f" of {subject!r}" if subject else "")
    message = (
        f"{model_version.registered_model.name} v{model_version.version}: {what} is "
        f"{value:.4g} ({rule.get_comparison_display()} {rule.threshold:g}) in the {rule.window} "
        f"from {snapshot.window_start:%Y-%m-%d %H:%M} UTC"
    )
    alert = Alert.objects.create(
        rule=rule,
        model_version=model_version,
        snapshot=snapshot,
        subject=subject,
        metric=rule.metric,
        comparison=rule.comparison,
        threshold=rule.threshold,
        value=value,
        last_value=value,
        message=message,
        webhook_status="pending" if settings.ATTEST_ALERT_WEBHOOK_URL else "",
        email_status="pending" if settings.ATTEST_ALERT_EMAILS else "",
    )
    record_event(
        "alert.raised",
        actor_name=SYSTEM,
        target=alert,
        rule=rule.pk,
        metric=rule.metric,
        subject=subject,
        value=value,
        snapshot=snapshot.pk,
    )
    transaction.on_commit(lambda: enqueue_delivery(alert.pk), robust=True)
    return alert


def _resolve(alert: Alert, value: float) -> None:
    alert.state, alert.resolved_at = Alert.RESOLVED, timezone.now()
    alert.last_value, alert.last_seen_at = value, alert.resolved_at
    alert.save(update_fields=["state", "resolved_at", "last_value", "last_seen_at"])
    record_event("alert.resolved", actor_name=SYSTEM, target=alert, value=value)


@transaction.atomic
def acknowledge_alert(actor: roles.Actor, alert: Alert, *, ip=None) -> Alert:
    """Someone has seen it: the alert stays until the metric recovers, but is no longer open."""
    actor.require(roles.ACKNOWLEDGE_ALERTS)
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    if alert.state == Alert.RESOLVED:
        raise Conflict("This alert is resolved already: the metric is back within bounds.")
    if alert.state == Alert.OPEN:
        alert.state = Alert.ACKNOWLEDGED
        alert.acknowledged_by = actor.user
        alert.acknowledged_at = timezone.now()
        alert.save(update_fields=["state", "acknowledged_by", "acknowledged_at"])
        record_event("alert.acknowledged", actor=actor, target=alert, ip=ip)
    return alert


# --- delivery ------------------------------------------------------------------------------


class TransientDeliveryError(Exception):
    """The receiver could not be reached (or answered 5xx): worth another try."""


def enqueue_delivery(alert_id: int) -> None:
    if settings.ATTEST_ALERT_WEBHOOK_URL:
        current_app.send_task("monitoring.deliver_webhook", args=(alert_id,))
    if settings.ATTEST_ALERT_EMAILS:
        current_app.send_task("monitoring.deliver_email", args=(alert_id,))


def alert_json(alert: Alert) -> dict:
    model_version = alert.model_version
    return {
        "id": alert.pk,
        "model": model_version.registered_model.name,
        "version": model_version.version,
        "rule": {"id": alert.rule_id, "name": alert.rule.name, "window": alert.rule.window},
        "metric": alert.metric,
        "subject": alert.subject or None,
        "comparison": alert.comparison,
        "threshold": alert.threshold,
        "value": alert.value,
        "last_value": alert.last_value,
        "message": alert.message,
        "state": alert.state,
        "raised_at": alert.raised_at.isoformat(),
        "last_seen_at": alert.last_seen_at.isoformat(),
        "acknowledged_by": alert.acknowledged_by.get_username() if alert.acknowledged_by else None,
        "acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at else None,
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "window_start": alert.snapshot.window_start.isoformat() if alert.snapshot else None,
        "window_end": alert.snapshot.window_end.isoformat() if alert.snapshot else None,
    }


def load_alert(alert_id: int) -> Alert:
    """An alert with what its JSON and messages show."""
    return Alert.objects.select_related(
        "rule", "snapshot", "acknowledged_by", "model_version__registered_model"
    ).get(pk=alert_id)


def send_webhook(alert_id: int) -> int:
    """POST the alert as JSON to ATTEST_ALERT_WEBHOOK_URL; returns the HTTP status."""
    url = settings.ATTEST_ALERT_WEBHOOK_URL
    if not url.startswith(("http://", "https://")):
        raise ValueError("ATTEST_ALERT_WEBHOOK_URL must be an http(s) URL")
    alert = load_alert(alert_id)
    body = json.dumps({"event": "alert.raised", "alert": alert_json(alert)}).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "Attest-alerts/1"},
    )
    try:
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=settings.ATTEST_ALERT_WEBHOOK_TIMEOUT
        ) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise TransientDeliveryError(f"the webhook answered {exc.code}") from exc
        raise
    except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out
        raise TransientDeliveryError(f"the webhook could not be reached: {exc}") from exc
    _delivered(alert_id, "webhook", "sent", "")
    return status


def send_email(alert_id: int) -> int:
    """E-mail the alert to ATTEST_ALERT_EMAILS through Django's e-mail backend."""
    alert = load_alert(alert_id)
    try:
        sent = send_mail(
            subject=f"[Attest] {alert.message}"[:200],
            message=_email_body(alert),
            from_email=None,
            recipient_list=settings.ATTEST_ALERT_EMAILS,
        )
    except OSError as exc:  # smtplib's errors are OSErrors: the server could not be reached
        raise TransientDeliveryError(f"the mail server could not be reached: {exc}") from exc
    _delivered(alert_id, "email", "sent", "")
    return sent


def _email_body(alert: Alert) -> str:
    model_version = alert.model_version
    link = (
        f"/models/{model_version.registered_model.name}/versions/{model_version.version}"
        "/monitoring/"
    )
    return "\n".join(
        [
            alert.message,
            "",
            f"Rule: {alert.rule.name}",
            f"Value: {alert.value:.6g} (threshold {COMPARISON_SIGNS[alert.comparison]} "
            f"{alert.threshold:g})",
            f"Raised at: {alert.raised_at:%Y-%m-%d %H:%M:%S} UTC",
            f"Monitoring page: {link}",
            "",
            "Acknowledge it on the monitoring dashboard (/monitoring/) once it is being handled.",
        ]
    )


def _delivered(alert_id: int, channel: str, status: str, error: str) -> None:
    Alert.objects.filter(pk=alert_id).update(
        **{f"{channel}_status": status, f"{channel}_error": error[:2000]}
    )


def delivery_failed(alert_id: int, channel: str, reason: str) -> None:
    """A final failure of one channel, written on the alert."""
    _delivered(alert_id, channel, "failed", reason)


# --- settings ------------------------------------------------------------------------------

SETTINGS_FIELDS = {
    "reference",
    "reference_from",
    "reference_to",
    "favourable_class",
    "fairness_groups",
}


def settings_json(config: MonitoringSettings) -> dict:
    return {
        "reference": config.reference_kind,
        "reference_from": config.reference_start.isoformat() if config.reference_start else None,
        "reference_to": config.reference_end.isoformat() if config.reference_end else None,
        "favourable_class": config.favourable_class,
        "fairness_groups": config.fairness_groups,
        "updated_by": config.updated_by.get_username() if config.updated_by else None,
        "updated_at": config.updated_at.isoformat(),
    }


def _settings_changes(model_version: ModelVersion, data: Any) -> dict:
    if not isinstance(data, dict):
        raise InvalidInput("The body must be an object.")
    unknown = sorted(set(data) - SETTINGS_FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown setting(s) {unknown}; known: {sorted(SETTINGS_FIELDS)}.")
    schema = model_version.parsed_schema
    changes: dict[str, Any] = {}
    if "reference" in data:
        kinds = [k for k, _ in MonitoringSettings.REFERENCE_KINDS]
        if data["reference"] not in kinds:
            raise InvalidInput(f"reference must be one of {kinds}.")
        changes["reference_kind"] = data["reference"]
        if data["reference"] == MonitoringSettings.PERIOD:
            start, end = parse_period(
                {"from": data.get("reference_from"), "to": data.get("reference_to")}
            )
            changes.update(reference_start=start, reference_end=end)
        else:
            changes.update(reference_start=None, reference_end=None)
    if "favourable_class" in data:
        value = data["favourable_class"]
        if value is not None and value not in schema.target.classes:
            raise InvalidInput(f"favourable_class must be one of {list(schema.target.classes)}.")
        changes["favourable_class"] = value
    if "fairness_groups" in data:
        changes["fairness_groups"] = _groups(schema, data["fairness_groups"])
    return changes


def _groups(schema, groups: Any) -> dict:
    numeric = {f.name for f in schema.features if f.protected and f.type in ("numeric", "integer")}
    if not isinstance(groups, dict):
        raise InvalidInput('fairness_groups must be an object, e.g. {"age": [25, 40, 60]}.')
    for name, edges in groups.items():
        if name not in numeric:
            raise InvalidInput(f"{name!r} is not a numeric protected feature of this version.")
        if not (
            isinstance(edges, list)
            and edges
            and all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges)
            and all(math.isfinite(e) for e in edges)
            and edges == sorted(set(edges))
        ):
            raise InvalidInput(f"fairness_groups[{name!r}] must be increasing finite numbers.")
    return groups


@transaction.atomic
def configure_monitoring(
    actor: roles.Actor, model_version: ModelVersion, data: Any, *, ip=None
) -> MonitoringSettings:
    """Change what a version is compared against (audited, with the values before and after)."""
    actor.require(roles.CONFIGURE_MONITORING)
    changes = _settings_changes(model_version, data)
    config = ensure_monitoring(model_version)
    config = MonitoringSettings.objects.select_for_update().get(pk=config.pk)
    before = settings_json(config)
    for field, value in changes.items():
        setattr(config, field, value)
    config.updated_by = actor.user
    config.updated_at = timezone.now()
    config.save(update_fields=[*changes, "updated_by", "updated_at"])
    after = settings_json(config)
    record_event(
        "monitoring.configured",
        actor=actor,
        target=model_version,
        ip=ip,
        before={k: before[k] for k in before if k in SETTINGS_FIELDS},
        after={k: after[k] for k in after if k in SETTINGS_FIELDS},
    )
    return config
