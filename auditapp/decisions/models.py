"""Decisions: one row per production prediction, never updated or deleted."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from auditapp.appendonly import AppendOnlyModel, AppendOnlyQuerySet
from auditapp.decisions.hashing import content_hash, decision_document
from auditapp.registry.models import ModelVersion, RegisteredModel, visible_models_q


class DecisionQuerySet(AppendOnlyQuerySet):
    def visible_to(self, actor) -> DecisionQuerySet:
        """Decisions of the models the actor may see."""
        scope = visible_models_q(actor, prefix="registered_model__")
        return self.filter(scope) if scope else self

    def with_related(self) -> DecisionQuerySet:
        return self.select_related("registered_model", "model_version")


class Decision(AppendOnlyModel):
    SOURCES = [("api", "API"), ("serving", "serving"), ("import", "import")]

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.PROTECT, related_name="decisions"
    )
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="decisions"
    )
    request_id = models.CharField(max_length=200)
    # null: no subject was given (a distinct fact from an empty reference).
    subject_ref = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    inputs = models.JSONField()
    prediction = models.JSONField()
    score = models.FloatField(null=True, blank=True)
    predicted_at = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=10, choices=SOURCES)
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64)
    # The salt of the sensitive inputs' commitment (hashing.py); null before commitments.
    salt = models.BinaryField(null=True, blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    client = models.CharField(max_length=200, blank=True, help_text="User or token that sent it.")

    objects = DecisionQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "request_id"], name="unique_request_id_per_model"
            )
        ]
        indexes = [
            models.Index(fields=["model_version", "predicted_at"]),
            models.Index(fields=["predicted_at", "id"]),
            models.Index(fields=["subject_ref"]),
        ]

    def __str__(self) -> str:
        return f"decision {self.pk} ({self.request_id})"

    def hashed_fields(self) -> dict:
        return {
            "model": self.registered_model.name,
            "version": self.model_version.version,
            "artifact_sha256": self.model_version.artifact_sha256,
            "request_id": self.request_id,
            "subject_ref": self.subject_ref,
            "inputs": self.inputs,
            "prediction": self.prediction,
            "score": self.score,
            "predicted_at": self.predicted_at,
            "recorded_at": self.recorded_at,
            "source": self.source,
            "metadata": self.metadata,
        }

    @property
    def sensitive_names(self) -> frozenset[str]:
        """The inputs this decision commits to rather than hashes in clear."""
        return self.model_version.parsed_schema.sensitive_names

    @property
    def salt_bytes(self) -> bytes | None:
        return None if self.salt is None else bytes(self.salt)

    def sensitive_commitment(self) -> str | None:
        """The commitment to the sensitive inputs that the content hash covers."""
        document = decision_document(self.hashed_fields(), self.sensitive_names, self.salt_bytes)
        return document.get("sensitive_inputs")

    def compute_content_hash(self) -> str:
        return content_hash(self.hashed_fields(), self.sensitive_names, self.salt_bytes)


class Outcome(AppendOnlyModel):
    """Ground truth for a decision, arriving later (SR 11-7 outcomes analysis). Append-only."""

    SOURCES = [("api", "API"), ("import", "import")]

    decision = models.ForeignKey(Decision, on_delete=models.PROTECT, related_name="outcomes")
    outcome = models.JSONField()
    observed_at = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    source = models.CharField(max_length=10, choices=SOURCES, default="api")

    class Meta:
        ordering = ["-observed_at", "-id"]

    def __str__(self) -> str:
        return f"outcome {self.outcome!r} of decision {self.decision_id}"


class Seal(AppendOnlyModel):
    """A block of the hash chain: Merkle roots over newly recorded decisions and audit events.

    A seal covers every decision and audit event whose id is above the previous
    seal's and at most its own last id, in id (insertion) order. It keeps their
    ids and content hashes (the leaves) so verification can name the first row
    that no longer matches, and it is chained to the previous seal by hash.
    The chain's fields and their canonical form are in `sealing.seal_document`.
    """

    index = models.PositiveIntegerField(unique=True)
    sealed_at = models.DateTimeField(default=timezone.now)
    previous_hash = models.CharField(max_length=64)
    decision_count = models.PositiveIntegerField()
    last_decision_id = models.BigIntegerField(null=True)
    decisions_root = models.CharField(max_length=64)
    event_count = models.PositiveIntegerField()
    last_event_id = models.BigIntegerField(null=True)
    events_root = models.CharField(max_length=64)
    seal_hash = models.CharField(max_length=64, unique=True)
    # Packed little-endian int64 ids and 32-byte content hashes, in id order.
    decision_ids = models.BinaryField()
    decision_leaves = models.BinaryField()
    event_ids = models.BinaryField()
    event_leaves = models.BinaryField()

    class Meta:
        ordering = ["index"]

    def __str__(self) -> str:
        return f"seal {self.index} ({self.seal_hash[:12]}…)"
