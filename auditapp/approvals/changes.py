"""The kinds of change that can wait for a second person, each registered by its own app.

The registry registers "stage" and "four_eyes", serving "traffic" and "promote",
monitoring "thresholds" (in their AppConfig.ready()), so this app, below them all,
imports none of them. A kind names the capability that makes the change (who may ask
for it and who may approve it) and, by its dotted path (imported at its first call, as
decisions/explanation_hooks.py does), the function that applies an approved request:
`apply(approval, approver, ip)` re-checks that the change still fits what is in force
(else raises Conflict, code "approval_stale") and applies it, all inside the approving
transaction; it returns what it wrote ({"stage_change": 12}), kept with the decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from auditapp.accounts.roles import Actor
    from auditapp.approvals.models import Approval


@dataclass(frozen=True)
class ChangeKind:
    name: str
    label: str  # for people: "Stage change"
    capability: str
    apply_path: str  # "auditapp.registry.services.apply_approved_stage"

    def apply(self, approval: Approval, approver: Actor, ip: str | None) -> dict[str, Any]:
        function: Callable[[Approval, Actor, str | None], dict[str, Any]] = import_string(
            self.apply_path
        )
        return function(approval, approver, ip)


_KINDS: dict[str, ChangeKind] = {}


def register(kind: ChangeKind) -> ChangeKind:
    if kind.name in _KINDS and _KINDS[kind.name] != kind:
        raise ValueError(f"change kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    return kind


def kind(name: str) -> ChangeKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise RuntimeError(f"no change kind {name!r} registered: is its app installed?") from None


def labels() -> dict[str, str]:
    return {name: k.label for name, k in _KINDS.items()}
