"""Monitoring: per-version settings, metric snapshots per window, alert rules and alerts."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from auditapp.registry.models import ModelVersion, RegisteredModel, visible_models_q

HOUR, DAY, WEEK, CUSTOM = "hour", "day", "week", "custom"
WINDOWS = [(w, w) for w in (HOUR, DAY, WEEK, CUSTOM)]


class MonitoringSettings(models.Model):
    """What a version is compared against, and how its fairness groups are formed.

    `reference_cache` keeps what is costly to derive from the background sample
    (the model's scores on it, SHAP attributions of its rows), keyed by the
    artifact and background hashes, so it is computed once per version.
    """

    BACKGROUND, PERIOD = "background", "period"
    REFERENCE_KINDS = [(BACKGROUND, "background sample"), (PERIOD, "a period of decisions")]

    model_version = models.OneToOneField(
        ModelVersion, on_delete=models.PROTECT, related_name="monitoring_settings"
    )
    reference_kind = models.CharField(max_length=20, choices=REFERENCE_KINDS, default=BACKGROUND)
    reference_start = models.DateTimeField(null=True, blank=True)
    reference_end = models.DateTimeField(null=True, blank=True)
    # The class that counts as "selected" for fairness; null: the class that is not
    # the positive (adverse) class of a binary target.
    favourable_class = models.JSONField(null=True, blank=True)
    # {"age": [25, 40, 60]}: bin edges for numeric protected features.
    fairness_groups = models.JSONField(default=dict, blank=True)
    reference_cache_key = models.CharField(max_length=200, blank=True, default="")
    reference_cache = models.JSONField(default=dict, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "monitoring settings"

    def __str__(self) -> str:
        return f"monitoring of {self.model_version_id}: {self.reference_kind}"


class MetricSnapshotQuerySet(models.QuerySet):
    def visible_to(self, actor) -> MetricSnapshotQuerySet:
        scope = visible_models_q(actor, prefix="model_version__registered_model__")
        return self.filter(scope) if scope else self


class MetricSnapshot(models.Model):
    """Every metric of one version over one window [window_start, window_end). Derived
    data: recomputing a window replaces its figures (the decisions themselves never change)."""

    PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
    STATUSES = [(s, s) for s in (PENDING, RUNNING, DONE, FAILED)]

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="metric_snapshots"
    )
    window = models.CharField(max_length=10, choices=WINDOWS)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    decisions = models.PositiveIntegerField(default=0)
    data = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    duration_ms = models.FloatField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    computed_at = models.DateTimeField(null=True, blank=True)

    objects = MetricSnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["window_start", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "window", "window_start", "window_end"],
                name="one_snapshot_per_version_window",
            )
        ]
        indexes = [models.Index(fields=["model_version", "window", "window_start"])]

    def __str__(self) -> str:
        return f"{self.window} {self.window_start:%Y-%m-%d %H:%M} of {self.model_version_id}"


class AlertRule(models.Model):
    """Raise an alert when `metric` `comparison` `threshold` on a window of this kind.

    Scope: a version, every version of a model, or (both empty) every version.
    """

    GT, GTE, LT, LTE = "gt", "gte", "lt", "lte"
    COMPARISONS = [(GT, ">"), (GTE, "≥"), (LT, "<"), (LTE, "≤")]
    METRICS = [
        ("input_drift_psi", "input drift (PSI)"),
        ("score_drift_psi", "score drift (PSI)"),
        ("attribution_ndcg", "attribution ranking agreement (NDCG)"),
        ("disparate_impact_ratio", "disparate impact ratio"),
        ("demographic_parity_difference", "demographic parity difference"),
        ("equalized_odds_difference", "equalised-odds difference"),
        ("roc_auc", "ROC AUC"),
        ("roc_auc_drop", "ROC AUC drop vs the reference"),
        ("accuracy", "accuracy"),
        ("brier", "Brier score"),
        ("explanation_failure_rate", "explanation failure rate"),
    ]

    name = models.CharField(max_length=200)
    metric = models.CharField(max_length=50, choices=METRICS)
    comparison = models.CharField(max_length=3, choices=COMPARISONS)
    threshold = models.FloatField()
    window = models.CharField(max_length=10, choices=WINDOWS, default=DAY)
    registered_model = models.ForeignKey(
        RegisteredModel, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="alert_rules"
    )
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.metric} {self.get_comparison_display()} {self.threshold} ({self.window})"

    def breached(self, value: float) -> bool:
        return {
            self.GT: value > self.threshold,
            self.GTE: value >= self.threshold,
            self.LT: value < self.threshold,
            self.LTE: value <= self.threshold,
        }[self.comparison]


class AlertQuerySet(models.QuerySet):
    def visible_to(self, actor) -> AlertQuerySet:
        scope = visible_models_q(actor, prefix="model_version__registered_model__")
        return self.filter(scope) if scope else self

    def active(self) -> AlertQuerySet:
        return self.filter(state__in=[Alert.OPEN, Alert.ACKNOWLEDGED])


class Alert(models.Model):
    """One breach of a rule by one version (and feature): raised once, open until the
    metric is back within bounds, then resolved; a user may acknowledge it meanwhile."""

    OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
    STATES = [(s, s) for s in (OPEN, ACKNOWLEDGED, RESOLVED)]
    ACTIVE = (OPEN, ACKNOWLEDGED)

    rule = models.ForeignKey(AlertRule, on_delete=models.PROTECT, related_name="alerts")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="alerts")
    snapshot = models.ForeignKey(
        MetricSnapshot, null=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    subject = models.CharField(max_length=200, blank=True, default="")  # a feature, or ""
    metric = models.CharField(max_length=50)
    comparison = models.CharField(max_length=3)
    threshold = models.FloatField()
    value = models.FloatField()  # when raised
    last_value = models.FloatField()
    message = models.TextField()
    state = models.CharField(max_length=15, choices=STATES, default=OPEN)
    raised_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    webhook_status = models.CharField(max_length=10, blank=True, default="")
    webhook_error = models.TextField(blank=True, default="")
    email_status = models.CharField(max_length=10, blank=True, default="")
    email_error = models.TextField(blank=True, default="")

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-raised_at", "-id"]
        constraints = [
            # Once per breach: at most one active alert per rule, version and subject.
            models.UniqueConstraint(
                fields=["rule", "model_version", "subject"],
                condition=Q(state__in=["open", "acknowledged"]),
                name="one_active_alert_per_breach",
            )
        ]
        indexes = [models.Index(fields=["state", "raised_at"])]

    def __str__(self) -> str:
        return f"alert {self.pk}: {self.message}"
