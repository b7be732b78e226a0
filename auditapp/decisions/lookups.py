"""A decision looked up for an actor: one the actor may not see is "not found"."""

from __future__ import annotations

from auditapp.accounts import roles
from auditapp.decisions.models import Decision
from auditapp.errors import NotFound


def get_decision_for_actor(actor: roles.Actor, decision_id: int) -> Decision:
    actor.require(roles.READ_DECISIONS)
    # One row: its model and version joined in the same query.
    visible = Decision.objects.visible_to(actor).select_related("registered_model", "model_version")
    decision = visible.filter(pk=decision_id).first()
    if decision is None:
        raise NotFound(f"No decision {decision_id}.")
    return decision
