"""Four-eyes approvals: a gated change asked for, and the one decision on it.

Both are append-only and recorded in the sealed log: the request says what will be
applied (`change`, the kind's own document) and by whom it was asked; its decision
(approved or rejected, by another person, with a comment) is a row of its own, at most
one per request. An approval's state is read, never stored: decided (its step's action),
else expired once `expires_at` has passed, else pending.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Case, F, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.appendonly import AppendOnlyModel, AppendOnlyQuerySet

PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"
STATES = (PENDING, APPROVED, REJECTED, EXPIRED)


class ApprovalQuerySet(AppendOnlyQuerySet):
    def visible_to(self, actor: roles.Actor) -> ApprovalQuerySet:
        """Approvals of the models the actor may see (a hidden model's are missing)."""
        return self.filter(roles.models_q(actor, "registered_model__"))

    def with_state(self) -> ApprovalQuerySet:
        """Each row annotated with `state` (pending, approved, rejected or expired), now."""
        undecided = Case(
            When(expires_at__lte=timezone.now(), then=Value(EXPIRED)), default=Value(PENDING)
        )
        return self.annotate(state=Coalesce(F("step__action"), undecided))


class Approval(AppendOnlyModel):
    """A change of a model waiting for a second person (kinds: auditapp/approvals/changes.py)."""

    kind = models.CharField(max_length=30)
    registered_model = models.ForeignKey(
        "registry.RegisteredModel", on_delete=models.PROTECT, related_name="approvals"
    )
    model_version = models.ForeignKey(
        "registry.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="approvals",
    )
    change = models.JSONField()  # what applying it does, in the kind's terms
    summary = models.CharField(max_length=300)  # for people: "v2: staging → production"
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requester_name = models.CharField(max_length=200)  # the actor's label (a token named)
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    objects = ApprovalQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["registered_model", "-id"], name="approval_model_newest")]

    def __str__(self) -> str:
        return f"approval {self.pk} ({self.kind}): {self.summary}"


class ApprovalStep(AppendOnlyModel):
    """The decision on an approval: approved (and applied) or rejected, by whom, why."""

    ACTIONS = [(APPROVED, "approved"), (REJECTED, "rejected")]

    approval = models.OneToOneField(Approval, on_delete=models.PROTECT, related_name="step")
    action = models.CharField(max_length=10, choices=ACTIONS)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    decider_name = models.CharField(max_length=200)
    comment = models.TextField(blank=True)
    # What applying the change wrote, by the kind's own names: {"stage_change": 12}.
    result = models.JSONField(default=dict, blank=True)
    decided_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"approval {self.approval_id} {self.action}"
