"""Explanation: one per (decision, method), computed asynchronously by workers."""

from django.db import models
from django.utils import timezone


class Explanation(models.Model):
    PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
    STATUSES = [(s, s) for s in (PENDING, RUNNING, DONE, FAILED)]
    METHODS = [("shap", "SHAP"), ("lime", "LIME")]

    # No index of its own: the unique (decision, method) index serves every lookup
    # by decision, and each index is one more write per claimed and stored row.
    decision = models.ForeignKey(
        "decisions.Decision",
        on_delete=models.PROTECT,
        related_name="explanations",
        db_index=False,
    )
    method = models.CharField(max_length=10, choices=METHODS)
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    explainer = models.CharField(max_length=100, blank=True, default="", db_default="")
    library_version = models.CharField(max_length=50, blank=True, default="", db_default="")
    output_space = models.CharField(max_length=20, blank=True, default="", db_default="")
    base_value = models.FloatField(null=True, blank=True)
    attributions = models.JSONField(null=True, blank=True)
    top_features = models.JSONField(null=True, blank=True)
    quality = models.JSONField(null=True, blank=True)
    config = models.JSONField(null=True, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="", db_default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["decision", "method"], name="one_explanation_per_method"
            )
        ]
        indexes = [models.Index(fields=["status", "updated_at"])]

    def __str__(self) -> str:
        return f"{self.method} of decision {self.decision_id}: {self.status}"
