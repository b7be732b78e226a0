"""Alert rules: the defaults every version gets, judging a snapshot against them (raise,
keep, resolve), acknowledging, and the alert as the API and the deliveries show it."""

from __future__ import annotations

import math

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.errors import Conflict
from auditapp.monitoring import thresholds
from auditapp.monitoring.documents import SnapshotDocument
from auditapp.monitoring.models import CUSTOM, DAY, Alert, AlertRule, MetricSnapshot
from auditapp.registry.models import ModelVersion

SYSTEM = "system (monitoring)"


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
            f"Score drift: PSI above {thresholds.PSI_SHIFT:g}",
            "score_drift_psi",
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


def ensure_default_rules(model_version: ModelVersion) -> None:
    """The version's default alert rules, created on first need."""
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


FAIRNESS_METRICS = (
    "disparate_impact_ratio",
    "demographic_parity_difference",
    "equalized_odds_difference",
)


def metric_values(metric: str, document: SnapshotDocument) -> dict[str, float]:
    """The values of one rule metric in a snapshot, by subject (a feature, or "")."""
    if metric == "input_drift_psi":
        values = {name: entry.psi for name, entry in document.drift.items()}
    elif metric == "score_drift_psi":
        values = {"": document.score_psi}
    elif metric == "attribution_ndcg":
        values = {"": document.ranking_ndcg}
    elif metric in FAIRNESS_METRICS:
        values = {name: getattr(entry, metric) for name, entry in document.fairness.items()}
    elif metric == "explanation_failure_rate":
        values = {"": document.failure_rate}
    else:
        values = {"": document.performance_figure(metric)}
    return {
        k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)
    }


DRIFT_METRICS = ("input_drift_psi", "score_drift_psi", "attribution_ndcg")
# Judged on every window that has ATTEST_MONITORING_MIN_DECISIONS decisions.
WINDOW_METRICS = (*FAIRNESS_METRICS, "explanation_failure_rate")


def enough_evidence(metric: str, document: SnapshotDocument, decisions: int) -> bool:
    """Whether a window holds enough for this metric to be judged: drift needs more
    decisions than the window's minimum, performance enough outcomes of each class."""
    if metric in DRIFT_METRICS:
        return decisions >= settings.ATTEST_MONITORING_MIN_DRIFT_DECISIONS
    if metric in WINDOW_METRICS:
        return True
    performance = document.performance
    if performance is None:
        return False
    least = settings.ATTEST_MONITORING_MIN_OUTCOMES_PER_CLASS
    rate = getattr(performance, "positive_rate", None)
    if rate is None:  # a regression: its outcomes, whatever their values
        return performance.outcomes >= least
    positives = round(performance.outcomes * rate)
    return min(positives, performance.outcomes - positives) >= least


def applicable_rules(model_version: ModelVersion):
    """Every rule that applies to the version: its own, its model's, everyone's."""
    return AlertRule.objects.filter(
        Q(model_version=model_version)
        | Q(model_version=None, registered_model=model_version.registered_model_id)
        | Q(model_version=None, registered_model=None)
    )


def rules_for(model_version: ModelVersion, window: str):
    return applicable_rules(model_version).filter(enabled=True, window=window)


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
    when it holds enough decisions (and, per metric, outcomes) for its figures to mean
    something (enough_evidence)."""
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
    document = SnapshotDocument.from_document(snapshot.data)
    raised = []
    for rule in rules:
        if not enough_evidence(rule.metric, document, snapshot.decisions):
            continue  # neither raised nor resolved on too little: the alert stands as it is
        for subject, value in metric_values(rule.metric, document).items():
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


def enqueue_delivery(alert_id: int) -> None:
    """One task per configured channel, sent by name (delivery.py does the sending)."""
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
