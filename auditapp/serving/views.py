"""A model's traffic page: the policy in force and every change, who made it and when."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from auditapp.accounts import roles
from auditapp.pages import page
from auditapp.serving import services
from auditapp.serving.models import TrafficPolicy

HISTORY = 50  # revisions shown, newest first


def changes(before: dict | None, after: dict) -> list[str]:
    """What a revision changed, field by field, as people read it."""
    if before is None:
        return ["first policy"]
    said = []
    for field in ("production", "canary", "shadow", "enabled", "fallback"):
        old, new = before.get(field), after.get(field)
        if old != new:
            said.append(f"{field}: {_shown(old)} → {_shown(new)}")
    return said or ["no change"]


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return f"v{value.get('version')} at {value.get('share', 0):.0%}"
    if isinstance(value, list):
        return ", ".join(f"v{v}" for v in value) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"v{value}"


def challengers(document: dict) -> list[str]:
    """The versions compared with production on the same inputs: its shadows (the
    comparison page's pairs come from shadow traffic)."""
    return [v for v in document.get("shadow") or [] if v != document.get("production")]


@login_required
@page
def traffic(request, name: str):
    actor = roles.actor_for(request)
    model = services.model_for(actor, name, roles.READ_MODELS)
    view = services.read_traffic(model)
    history = services.traffic_history(model, HISTORY)
    documents = {p.pk: p.document for p in history}
    rows = [
        {
            "policy": policy,
            "changes": changes(
                documents.get(policy.rolled_back_id or policy.replaced_id)
                if policy.action == TrafficPolicy.ROLLBACK
                else (documents.get(policy.replaced_id) if policy.replaced_id else None),
                policy.document,
            ),
        }
        for policy in history
    ]
    context = {
        "model": model,
        "view": view,
        "shown": {
            k: _shown(view.document.get(k)) for k in ("production", "canary", "shadow", "fallback")
        },
        "rows": rows,
        "may_change": actor.can(roles.CHANGE_TRAFFIC),
        "challengers": challengers(view.document),
    }
    return render(request, "serving/traffic.html", context)
