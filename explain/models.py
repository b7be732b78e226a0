"""Explanations: the work per (decision, method), and every result ever computed.

Explanation is work state (status, attempts, error, the worker's lease in
updated_at): mutable. ExplanationResult is one computed result: insert-only,
never changed; a recomputation adds a new one and the work row points to the
newest. ExplanationConfig is an explainer configuration, stored once per
(model version, method, configuration) and referenced by the results.
"""

from __future__ import annotations

from functools import cached_property

from django.conf import settings
from django.db import models
from django.utils import timezone

from auditapp.appendonly import AppendOnlyModel
from auditapp.registry.models import agreement_settings
from explain import packing, records


class ExplanationConfig(AppendOnlyModel):
    """How a model version's explanations were computed: one row per distinct configuration."""

    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    method = models.CharField(max_length=10)
    explainer = models.CharField(max_length=100)
    library_version = models.CharField(max_length=50)
    output_space = models.CharField(max_length=20)
    # The explainer's configuration, less the version's artifact and background
    # sha256 when it named them (version_hashes): the version holds those.
    content = models.JSONField()
    version_hashes = models.BooleanField(default=False)
    # sha256 of the whole configuration (records.config_digest): what makes it one row.
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "method", "digest"], name="one_config_per_version_method"
            )
        ]

    def __str__(self) -> str:
        return f"{self.method} configuration {self.pk} of version {self.model_version_id}"

    @cached_property
    def config(self) -> dict:
        """The configuration as the explainer gave it."""
        version = self.model_version
        return records.full_config(
            self.content, self.version_hashes, version.artifact_sha256, version.background_sha256
        )


class ExplanationResult(AppendOnlyModel):
    """One computed explanation of a decision. Never updated nor deleted."""

    decision = models.ForeignKey(
        "decisions.Decision", on_delete=models.PROTECT, related_name="explanation_results"
    )
    config = models.ForeignKey(
        ExplanationConfig, on_delete=models.PROTECT, related_name="results", db_index=False
    )
    base_value = models.FloatField()
    # float64 little-endian, one per feature in the version's schema order (packing.pack).
    attributions = models.BinaryField()
    # Null since explain.0011: the top features are derived from the attributions where
    # needed (explain.ranking; TopReasons keeps the newest SHAP result's for the search).
    # Rows written before keep the names of their three largest |attributions|.
    top_features = models.JSONField(null=True, blank=True)
    quality = models.JSONField(default=dict)
    seed = models.BigIntegerField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    computed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"result {self.pk} of decision {self.decision_id}"

    @cached_property
    def attribution_map(self) -> dict[str, float]:
        return packing.unpack(self.attributions, self.config.model_version.parsed_schema.names)

    def document(self) -> dict:
        """What this result's hash covers (records.result_document)."""
        config = self.config
        version = config.model_version
        row = {
            "decision_id": self.decision_id,
            "base_value": self.base_value,
            "attributions": self.attributions,
            "quality": self.quality,
            "seed": self.seed,
            "computed_at": self.computed_at,
            "config__method": config.method,
            "config__explainer": config.explainer,
            "config__library_version": config.library_version,
            "config__output_space": config.output_space,
            "config__content": config.content,
            "config__version_hashes": config.version_hashes,
            "config__model_version__artifact_sha256": version.artifact_sha256,
            "config__model_version__background_sha256": version.background_sha256,
        }
        return records.result_document(records.stored_values(row, version.parsed_schema.names))


class ExplanationQuerySet(models.QuerySet):
    def with_results(self) -> ExplanationQuerySet:
        """With each row's newest result and its configuration, read in the same query."""
        return self.select_related("result__config__model_version")


class Explanation(models.Model):
    """The work on one (decision, method): mutable state, plus a pointer to its newest result."""

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
    error = models.TextField(blank=True, default="", db_default="")
    # The newest result of (decision, method); records.stale_pointers() checks it is.
    result = models.ForeignKey(
        ExplanationResult,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    # On a LIME row: its agreement with the decision's SHAP result, judged when the
    # later of the two was stored. Derived from two kept results, so not one itself.
    agreement = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = ExplanationQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["decision", "method"], name="one_explanation_per_method"
            )
        ]
        indexes = [
            # The sweeper's and the overview's: only unfinished work is in it, so a
            # done row (nearly all of them) costs no entry.
            models.Index(
                fields=["status", "updated_at"],
                name="unfinished_work",
                condition=models.Q(status__in=["pending", "running", "failed"]),
            )
        ]

    def __str__(self) -> str:
        return f"{self.method} of decision {self.decision_id}: {self.status}"

    # The newest result's fields, read as the row's own (presenters, pages, rules).
    def _of_result(self, name: str, default=None):
        return default if self.result is None else getattr(self.result, name)

    def _of_config(self, name: str, default=""):
        return default if self.result is None else getattr(self.result.config, name)

    @property
    def explainer(self) -> str:
        return self._of_config("explainer")

    @property
    def library_version(self) -> str:
        return self._of_config("library_version")

    @property
    def output_space(self) -> str:
        return self._of_config("output_space")

    @property
    def config(self) -> dict | None:
        return self._of_config("config", None)

    @property
    def base_value(self) -> float | None:
        return self._of_result("base_value")

    @property
    def seed(self) -> int | None:
        return self._of_result("seed")

    @property
    def duration_ms(self) -> float | None:
        return self._of_result("duration_ms")

    @property
    def attributions(self) -> dict[str, float] | None:
        return self._of_result("attribution_map")

    @property
    def top_features(self) -> list[str] | None:
        """Every feature by decreasing |attribution| (up to engine.TOP_FEATURES)."""
        attributions = self.attributions
        return None if attributions is None else records.ranked(attributions)

    @property
    def quality(self) -> dict | None:
        """The newest result's quality as computed (records.shown_quality), with its
        agreement with SHAP on a LIME row (the version's thresholds judge the figures kept)."""
        result = self.result
        if result is None:
            return None
        quality = records.shown_quality(
            result.quality, result.config.content, lambda: self.decision.score
        )
        agreement = records.shown_agreement(
            self.agreement,
            quality.get("fidelity_r2"),
            lambda: agreement_settings(result.config.model_version.explain_settings),
        )
        return records.with_agreement(quality, agreement)


class TopReasons(models.Model):
    """The top three features of a decision's newest SHAP result, with the decision's time:
    one row a decision.

    Derived, not a record (the result it repeats is sealed): it lets the top_reason search
    start from the decisions a reason names instead of probing every decision of the
    period. Each place is indexed with the decision's time and id, the search page's
    order, so that a page reads the first matches of each place and stops
    (dossier.filters.ReasonFilter), however rare or common the reason. Replaced when a
    newer SHAP result of the decision is stored (explain.reasons).
    """

    decision = models.OneToOneField(
        "decisions.Decision", on_delete=models.PROTECT, primary_key=True, related_name="+"
    )
    first = models.TextField()  # the largest |attribution|
    second = models.TextField(blank=True, default="")  # "" when the schema has fewer features
    third = models.TextField(blank=True, default="")
    predicted_at = models.DateTimeField()  # the decision's: a search's time range narrows it

    PLACES = ("first", "second", "third")

    class Meta:
        indexes = [
            models.Index(fields=[place, "predicted_at", "decision"], name=f"reasons_{place}_time")
            for place in ("first", "second", "third")
        ]

    def __str__(self) -> str:
        return f"top reasons of decision {self.decision_id}: {', '.join(self.features)}"

    @property
    def features(self) -> list[str]:
        """The names, largest |attribution| first."""
        return [name for name in (self.first, self.second, self.third) if name]


# -- counterfactuals ----------------------------------------------------------------------------
class CounterfactualConfig(AppendOnlyModel):
    """How a version's counterfactuals were searched for: one row per distinct configuration
    (the method and its version, the libraries, the search's options, the background's
    spreads and the artifact and background sha256 it ran on)."""

    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    method = models.CharField(max_length=40)
    method_version = models.PositiveSmallIntegerField()
    library_versions = models.JSONField(default=dict)
    content = models.JSONField()  # the search's configuration, as the engine gave it
    # sha256 of method, method_version, library_versions and content: what makes it one row.
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "digest"], name="one_counterfactual_config_per_version"
            )
        ]

    def __str__(self) -> str:
        return f"counterfactual configuration {self.pk} of version {self.model_version_id}"


class CounterfactualResult(AppendOnlyModel):
    """One computed set of a decision's counterfactuals. Never updated nor deleted: a
    recomputation adds a new one and the work row points to the newest.

    `document` is the engine's result less what its configuration row holds (method,
    versions, configuration): goal, original, counterfactuals (changes, inputs, the
    re-scored prediction and score, sparsity, distance, plausibility), quality, note, error.
    """

    decision = models.ForeignKey(
        "decisions.Decision", on_delete=models.PROTECT, related_name="counterfactual_results"
    )
    config = models.ForeignKey(
        CounterfactualConfig, on_delete=models.PROTECT, related_name="results", db_index=False
    )
    document = models.JSONField()
    quality = models.JSONField(default=dict)
    found = models.PositiveSmallIntegerField(default=0)
    seed = models.BigIntegerField()
    error = models.TextField(blank=True, default="")
    duration_ms = models.FloatField(null=True, blank=True)
    # Who asked for this recomputation (None: computed when the decision was recorded).
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    computed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"counterfactuals {self.pk} of decision {self.decision_id}"

    @property
    def counterfactuals(self) -> list[dict]:
        return list(self.document.get("counterfactuals") or [])


class CounterfactualWork(models.Model):
    """The work on one decision's counterfactuals: mutable state (status, attempts, the
    worker's lease in updated_at) and a pointer to its newest result."""

    PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
    STATUSES = [(s, s) for s in (PENDING, RUNNING, DONE, FAILED)]

    decision = models.OneToOneField(
        "decisions.Decision", on_delete=models.PROTECT, related_name="counterfactual_work"
    )
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    result = models.ForeignKey(
        CounterfactualResult,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    # A recomputation asked for and not yet stored: who asked (the result records it).
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["status", "updated_at"], name="cf_work_by_status")]

    def __str__(self) -> str:
        return f"counterfactuals of decision {self.decision_id}: {self.status}"
