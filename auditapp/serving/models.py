"""Traffic policies: which version of a model answers predictions, one row per change."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from auditapp.appendonly import AppendOnlyModel
from auditapp.registry.models import RegisteredModel


class TrafficPolicy(AppendOnlyModel):
    """One revision of a model's traffic policy; the newest row is in force.

    Append-only: a change, a rollback included, is a new row, so the history is the
    table and a rollback is a row like any other. `document` is the policy as the API
    shows it (serving/policies.py: {"production", "canary", "shadow", "enabled",
    "fallback"}); `replaced` is the revision it replaced, which a rollback returns to
    (and a rollback's own `replaced` is that revision's, so rolling back again goes on
    back through the history).
    """

    PUT, ROLLBACK = "put", "rollback"
    ACTIONS = [(PUT, "changed"), (ROLLBACK, "rolled back")]

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.PROTECT, related_name="traffic_policies"
    )
    document = models.JSONField()
    action = models.CharField(max_length=10, choices=ACTIONS, default=PUT)
    replaced = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # A rollback: the revision it undid.
    rolled_back = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=200, blank=True)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["registered_model", "-id"], name="traffic_newest")]

    def __str__(self) -> str:
        return f"traffic policy {self.pk} of {self.registered_model_id}"
