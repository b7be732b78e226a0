"""Legal holds: decisions that nothing may erase (nor retire) while a matter is open.

A hold names a model, a period of predicted_at ([from, to)), a subject_ref, or any
combination (at least one), with a reason. Compliance officers and admins place and
release them (roles.MANAGE_LEGAL_HOLDS); each change is an audit event and a record in
the sealed log (kind `legal_hold`, recorded again when released).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from auditapp.accounts import records, roles
from auditapp.accounts.audit import record_event
from auditapp.decisions.models import LegalHold
from auditapp.errors import Conflict, InvalidInput, NotFound
from auditapp.filtering import in_utc, parse_moment_text, refuse_unknown_fields
from auditapp.hashing import canonical_time
from auditapp.registry.models import RegisteredModel
from auditapp.textcheck import identifier_problem

PLACED_EVENT = "legal_hold.placed"
RELEASED_EVENT = "legal_hold.released"
MAX_REASON = 2000


def active_holds(after: int = 0) -> list[LegalHold]:
    """The holds in force (those placed after hold id `after` only, if given)."""
    return list(LegalHold.objects.active().filter(pk__gt=after).order_by("id"))


def newest_hold_id() -> int:
    return LegalHold.objects.order_by("-id").values_list("id", flat=True).first() or 0


def covered_q(prefix: str = "") -> Q:
    """Decisions any active hold covers (an empty match when there is none)."""
    q = Q(pk__in=[])
    for hold in active_holds():
        q |= hold.covers_q(prefix)
    return q


def visible_holds(actor: roles.Actor) -> QuerySet:
    """The holds the actor may read: those of no model (a subject, a period) and those of
    a model the actor sees; a hidden model's hold is as missing (a token narrowed with
    `--models` had listed, read and released them)."""
    actor.require(roles.READ_LEGAL_HOLDS)
    seen = RegisteredModel.objects.visible_to(actor)
    return LegalHold.objects.filter(
        Q(registered_model__isnull=True) | Q(registered_model__in=seen)
    ).select_related("registered_model", "created_by", "released_by")


def get_hold_for_actor(actor: roles.Actor, hold_id: int) -> LegalHold:
    hold = visible_holds(actor).filter(pk=hold_id).first()
    if hold is None:
        raise NotFound(f"Legal hold {hold_id} does not exist.")
    return hold


def hold_json(hold: LegalHold) -> dict[str, Any]:
    return {
        "id": hold.pk,
        "model": hold.registered_model.name if hold.registered_model else None,
        "from": canonical_time(hold.starts) if hold.starts else None,
        "to": canonical_time(hold.ends) if hold.ends else None,
        "subject_ref": hold.subject_ref or None,
        "reason": hold.reason,
        "created_by": hold.created_by.get_username() if hold.created_by else None,
        "created_at": canonical_time(hold.created_at),
        "active": hold.released_at is None,
        "released_by": hold.released_by.get_username() if hold.released_by else None,
        "released_at": canonical_time(hold.released_at) if hold.released_at else None,
        "release_reason": hold.release_reason or None,
    }


def place_hold(actor: roles.Actor, data: dict[str, Any], *, ip=None, via: str = "api"):
    """A new hold, from {"model"?, "from"?, "to"?, "subject_ref"?, "reason"}."""
    actor.require(roles.MANAGE_LEGAL_HOLDS)
    if not isinstance(data, dict):
        raise InvalidInput('Send {"model"?, "from"?, "to"?, "subject_ref"?, "reason"}.')
    refuse_unknown_fields(data, ("model", "from", "to", "subject_ref", "reason"), "legal hold")
    errors: dict[str, list[str]] = {}
    hold = LegalHold(reason=_reason(data.get("reason"), "reason", errors))
    model_name = data.get("model")
    if model_name:
        model = RegisteredModel.objects.visible_to(actor).filter(name=str(model_name)).first()
        if model is None:
            errors["model"] = [f"No model named {model_name!r}."]
        hold.registered_model = model
    hold.starts = _moment(data.get("from"), "from", errors)
    hold.ends = _moment(data.get("to"), "to", errors)
    if hold.starts and hold.ends and hold.starts >= hold.ends:
        errors["to"] = ["`to` must be after `from`."]
    subject = data.get("subject_ref")
    if subject is not None and (not isinstance(subject, str) or len(subject) > 200):
        errors["subject_ref"] = ["A subject reference is a string of at most 200 characters."]
    elif subject and not subject.strip():
        errors["subject_ref"] = ["A subject reference is not blank."]
    elif subject and (problem := identifier_problem(subject)):  # as ingestion refuses it
        errors["subject_ref"] = [problem]
    hold.subject_ref = subject or ""
    if not (model_name or hold.starts or hold.ends or hold.subject_ref):
        errors["scope"] = ["Name a model, a period (from, to) or a subject_ref: one at least."]
    if errors:
        raise InvalidInput("The legal hold is not valid.", details=errors)
    hold.created_by = actor.user if actor.user.is_authenticated else None
    with transaction.atomic():
        hold.save(force_insert=True)
        records.append("legal_hold", [hold.pk])
        record_event(PLACED_EVENT, actor=actor, target=hold, ip=ip, via=via, **_facts(hold))
    return hold


def release_hold(
    actor: roles.Actor, hold_id: int, data: Any, *, ip=None, via: str = "api"
) -> LegalHold:
    """Release an active hold, from {"reason"}; what it covered may be erased again."""
    actor.require(roles.MANAGE_LEGAL_HOLDS)
    if not isinstance(data, dict):
        raise InvalidInput('Send {"reason"}: why the hold is released.')
    refuse_unknown_fields(data, ("reason",), "legal hold release")
    errors: dict[str, list[str]] = {}
    text = _reason(data.get("reason"), "reason", errors)
    if errors:
        raise InvalidInput("Say why the hold is released.", details=errors)
    with transaction.atomic():
        hold = None
        if visible_holds(actor).filter(pk=hold_id).exists():
            hold = LegalHold.objects.select_for_update().filter(pk=hold_id).first()
        if hold is None:
            raise NotFound(f"Legal hold {hold_id} does not exist.")
        if hold.released_at is not None:
            raise Conflict(f"Legal hold {hold_id} was released already.", code="hold_released")
        hold.released_by = actor.user if actor.user.is_authenticated else None
        hold.released_at = timezone.now()
        hold.release_reason = text
        hold.save(update_fields=["released_by", "released_at", "release_reason"])
        records.append("legal_hold", [hold.pk])
        record_event(
            RELEASED_EVENT, actor=actor, target=hold, ip=ip, via=via, reason=text, **_facts(hold)
        )
    return hold


def _facts(hold: LegalHold) -> dict[str, Any]:
    return {
        "model": hold.registered_model.name if hold.registered_model else None,
        "from": canonical_time(hold.starts) if hold.starts else None,
        "to": canonical_time(hold.ends) if hold.ends else None,
        "subject_ref": hold.subject_ref or None,
    }


def _reason(value: Any, name: str, errors: dict[str, list[str]]) -> str:
    if not isinstance(value, str) or not value.strip():
        errors[name] = ["A reason is required."]
        return ""
    if len(value) > MAX_REASON:
        errors[name] = [f"At most {MAX_REASON} characters."]
    return value.strip()


def _moment(value: Any, name: str, errors: dict[str, list[str]]) -> datetime | None:
    if value in (None, ""):
        return None
    moment = parse_moment_text(value)
    if moment is None or moment.tzinfo is None:
        errors[name] = ["An ISO-8601 time with its offset (2026-01-01T00:00:00Z)."]
        return None
    if (utc := in_utc(moment)) is None:
        errors[name] = ["outside the years 1 to 9999 in UTC"]
    return utc
