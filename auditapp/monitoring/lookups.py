"""An alert looked up for an actor: one on a model the actor may not see is "not found"."""

from __future__ import annotations

from auditapp.accounts import roles
from auditapp.errors import NotFound
from auditapp.monitoring.models import Alert


def get_alert_for_actor(actor: roles.Actor, alert_id: int) -> Alert:
    actor.require(roles.READ_MODELS)
    alert = (
        Alert.objects.visible_to(actor)
        .select_related("model_version__registered_model", "rule")
        .filter(pk=alert_id)
        .first()
    )
    if alert is None:
        raise NotFound(f"No alert {alert_id}.")
    return alert
