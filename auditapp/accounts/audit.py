"""Writing the access log. Services call `record_event` inside their transaction."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.db import models

from auditapp.accounts.models import AuditEvent
from auditapp.accounts.roles import Actor
from auditapp.appendonly import insert_in_order
from auditapp.hashing import new_salt


def client_ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") if request is not None else None


def _model_of(target: models.Model | None, details: dict) -> str:
    """The name of the registered model an event concerns, from its details or target."""
    named = details.get("model") or (details.get("params") or {}).get("model")
    if isinstance(named, str):
        return named[:100]
    for path in ("registered_model", "model_version.registered_model", "decision.registered_model"):
        obj = target
        for attribute in path.split("."):
            obj = getattr(obj, attribute, None)
        if obj is not None:
            return obj.name
    if target is not None and target._meta.label_lower == "registry.registeredmodel":
        return target.name
    return ""


def record_event(
    action: str,
    *,
    actor: Actor | None = None,
    user=None,
    target: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    ip: str | None = None,
    actor_name: str = "",
    sensitive_details: dict | None = None,
    **details: Any,
) -> AuditEvent:
    """Append one AuditEvent. `action` is dotted: `model_version.registered`.

    `sensitive_details` are values only readers with view_sensitive may see; the
    hash covers a salted commitment to them (hashing.commitment).
    """
    if actor is not None:
        user = actor.user
        actor_name = actor_name or (actor.label if actor.system else "")
        if actor.token is not None:
            details.setdefault("token", actor.token.key_prefix)
    if user is not None and not user.is_authenticated:
        user = None
    if target is not None:
        object_type = object_type or target._meta.label_lower
        object_id = object_id or str(target.pk)
    event = AuditEvent(
        model=_model_of(target, details),
        actor=user,
        actor_name=user.get_username() if user is not None else actor_name,
        action=action,
        object_type=object_type,
        object_id=object_id,
        ip=ip,
        details=details,
    )
    if sensitive_details:
        event.sensitive_details, event.salt = sensitive_details, new_salt()
    event.content_hash = event.compute_content_hash()
    insert_in_order(event)
    return event


def record_counts_per_model(
    action: str,
    sent: Counter,
    created: Counter,
    *,
    per_model: dict[str, dict] | None = None,
    **fields: Any,
) -> None:
    """One event per model of a batch, so that an actor limited to some models reads theirs."""
    for model_name in sorted(sent):
        record_event(
            action,
            model=model_name,
            created=created[model_name],
            duplicates=sent[model_name] - created[model_name],
            **(per_model or {}).get(model_name, {}),
            **fields,
        )


def id_runs(ids: list[int]) -> list[list[int]]:
    """Ids as [first, last] runs of consecutive ids: a batch of 10,000 is usually one run."""
    runs: list[list[int]] = []
    for row_id in sorted(ids):
        if runs and row_id == runs[-1][1] + 1:
            runs[-1][1] = row_id
        else:
            runs.append([row_id, row_id])
    return runs
