"""Registered models and their immutable versions."""

from __future__ import annotations

from functools import cached_property

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.appendonly import AppendOnlyModel
from explain.schema import Schema, parse_schema


class RegisteredModelQuerySet(models.QuerySet):
    def visible_to(self, actor) -> RegisteredModelQuerySet:
        """The models an actor may see (roles.py decides the scope)."""
        scope = actor.model_scope
        qs = self
        if not scope.all_models:
            qs = qs.filter(assignees__id=scope.assigned_to_user_id)
        if scope.names is not None:
            qs = qs.filter(name__in=scope.names)
        return qs


def visible_models_q(actor, prefix: str = "") -> Q:
    """The same scope as RegisteredModel.objects.visible_to, for related querysets."""
    return roles.models_q(actor, prefix)


class RegisteredModel(models.Model):
    TASKS = [("classification", "classification"), ("regression", "regression")]

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    task = models.CharField(max_length=20, choices=TASKS)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    assignees = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="assigned_models"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # Four-eyes: a change touching production (a stage change to or from it, the traffic
    # policy, a production version's monitoring settings) waits for a second person's
    # approval (auditapp/approvals). On for every model unless turned off, which itself
    # needs a second person.
    four_eyes = models.BooleanField(default=True)

    objects = RegisteredModelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


# LIME's local fit (R²) as the decision page words it: "fits well" from LIME_GOOD_FIT
# (the fit the agreement rule asks for, below), "fits poorly" under LIME_POOR_FIT, where
# its weights describe little of the model.
LIME_GOOD_FIT = 0.5
LIME_POOR_FIT = 0.2

# The SHAP-LIME agreement rule's thresholds (registry/agreement.py judges by them; the
# measurements behind each are in reviews/rules.py); a version's explain.agreement
# overrides any of them at registration.
AGREEMENT_DEFAULTS = {
    # below a good fit, LIME disagreeing with SHAP is no evidence that either is wrong
    "min_fidelity": LIME_GOOD_FIT,
    # off: sharing the top 3 is too coarse to add evidence beyond the rank correlation
    "min_top_k_overlap": 0.0,
    # honest explanations reach 0.43 in 95 % of decisions; 81-85 % of shuffled ones fall below
    "min_rank_correlation": 0.3,
}


def agreement_settings(explain_settings: dict | None) -> dict:
    """The agreement thresholds in force for a version (its explain_settings), defaults filled."""
    return {**AGREEMENT_DEFAULTS, **((explain_settings or {}).get("agreement") or {})}


class ModelVersion(models.Model):
    """One trained artifact with its schema. Only `stage` ever changes."""

    STAGING, PRODUCTION, ARCHIVED = "staging", "production", "archived"
    STAGES = [(s, s) for s in (STAGING, PRODUCTION, ARCHIVED)]
    LIME_MODES = [("all", "every decision"), ("sample", "a sample"), ("on_demand", "on demand")]
    COUNTERFACTUAL_MODES = LIME_MODES  # of the adverse decisions

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.PROTECT, related_name="versions"
    )
    version = models.CharField(max_length=50)
    stage = models.CharField(max_length=20, choices=STAGES, default=STAGING)
    artifact = models.FileField(upload_to="artifacts/")
    artifact_format = models.CharField(max_length=10)
    artifact_sha256 = models.CharField(max_length=64)
    schema = models.JSONField()
    schema_sha256 = models.CharField(max_length=64)
    background = models.FileField(upload_to="backgrounds/", blank=True)
    background_sha256 = models.CharField(max_length=64, blank=True)
    background_rows = models.PositiveIntegerField(default=0)
    description = models.TextField(blank=True)
    intended_use = models.TextField(blank=True)
    limitations = models.TextField(blank=True)
    training_data = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    lime_mode = models.CharField(max_length=10, choices=LIME_MODES, default="all")
    lime_sample_rate = models.FloatField(default=1.0)
    # How this version's explanations are judged: thresholds of the review rules
    # (SHAP-LIME agreement), the recorded-score tolerance, allow_approximate.
    explain_settings = models.JSONField(default=dict, blank=True)
    # The registration self-test: a seeded sample of the background explained and
    # checked against the pipeline's own outputs (figures shown on the version page).
    self_test = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["registered_model__name", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "version"], name="unique_version_per_model"
            )
        ]

    def __str__(self) -> str:
        return f"{self.registered_model.name} v{self.version}"

    def save(self, *args, **kwargs):
        update_fields = kwargs.get("update_fields")
        if not self._state.adding and (update_fields is None or set(update_fields) - {"stage"}):
            raise ValueError("A model version is immutable; only its stage can change.")
        super().save(*args, **kwargs)

    @property
    def explained_approximately(self) -> bool:
        """Its exact SHAP explainer failed the self-test; it was accepted as approximate."""
        return (self.self_test or {}).get("shap", {}).get("passed") is False

    @cached_property
    def parsed_schema(self) -> Schema:
        return parse_schema(self.schema)

    @property
    def counterfactual_policy(self) -> dict:
        """Which adverse decisions get counterfactuals: {"mode": "all" (the default),
        "sample" or "on_demand", "sample_rate"} (explain.counterfactuals at registration,
        kept in explain_settings)."""
        stored = (self.explain_settings or {}).get("counterfactuals") or {}
        mode = stored.get("mode", "all")
        return {"mode": mode, "sample_rate": stored.get("sample_rate", 1.0)}


class StageChange(AppendOnlyModel):
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="stage_changes"
    )
    from_stage = models.CharField(max_length=20, blank=True)
    to_stage = models.CharField(max_length=20)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["changed_at", "id"]

    def __str__(self) -> str:
        return f"{self.model_version}: {self.from_stage or '-'} → {self.to_stage}"
