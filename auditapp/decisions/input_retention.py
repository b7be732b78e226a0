"""Retention of personal inputs per model: after a model's period, a decision's inputs are
erased (decisions/erasure.py), the decision itself and its proof kept.

This is not retiring a month (decisions/retention.py), which deletes whole rows, the
decisions and everything referring to them, once their month has expired. Here every
row stays: the record that a decision was made, by which version, with which outcome
and score, and the commitments its content hash covers; only the input values and
the salt go.

A model's `RetentionPolicy.days` counts from predicted_at. The daily beat task (and
`manage.py apply_retention`, and POST /api/v1/retention/run) erases, per model, the
inputs of its form-2 decisions predicted before today less the period, not covered
by a legal hold. A dry run says what would go, per model and month, and what holds,
older document forms and copies spare. `duty_days` is the other direction: a duty to
keep inputs at least that long, which refuses a person's erasure request for a
younger decision (reports/subjects.py).

On PostgreSQL, with decisions partitioned by month, the expired decisions are found by
the (predicted_at, id) index of each partition, and the erasure is one set-based UPDATE
joined to a temporary table of the commitments (erasure._update), not a statement per
row: a whole expired month is erased in one statement.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.decisions import erasure
from auditapp.decisions.models import Decision, Erasure, RetentionPolicy
from auditapp.errors import InvalidInput, NotFound
from auditapp.filtering import refuse_unknown_fields
from auditapp.registry.models import RegisteredModel

SET_EVENT = "retention.set"
PREVIEWED_EVENT = "retention.previewed"
MAX_DAYS = 36_600  # a hundred years


@dataclass
class RetentionRun:
    """One model's part of a retention run (or dry run)."""

    model: str
    days: int
    before: dt.datetime  # decisions predicted before it are past the period
    plan: erasure.ErasurePlan
    dry_run: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "days": self.days,
            "before": self.before.isoformat(),
            "dry_run": self.dry_run,
            **self.plan.as_dict(),
        }

    def lines(self) -> list[str]:
        verb = "Would erase" if self.dry_run else "Erased"
        out = [
            f"{self.model} (retention {self.days} days, predicted before "
            f"{self.before:%Y-%m-%d %H:%M} UTC): {verb} the inputs of "
            f"{len(self.plan.ids):,} decisions"
            + (
                f", declaration #{self.plan.declaration.pk}"
                if self.plan.declaration is not None
                else ""
            )
        ]
        for month, n in self.plan.by_model.get(self.model, {}).items():
            out.append(f"  {month}: {n:,}")
        for hold, n in self.plan.held.items():
            out.append(f"  legal hold #{hold} spared {n:,}")
        if self.plan.older_form:
            out.append(
                f"  {self.plan.older_form:,} recorded before document form 2 kept (their "
                "hash covers the inputs in clear)"
            )
        for label, n in self.plan.copies.items():
            out.append(f"  {n:,} kept: {label} copy their inputs")
        if self.plan.already:
            out.append(f"  {self.plan.already:,} erased before")
        return out


def policy_json(model: RegisteredModel) -> dict[str, Any]:
    policy = RetentionPolicy.objects.filter(registered_model=model).first()
    return {
        "model": model.name,
        "days": policy.days if policy else None,
        "duty_days": policy.duty_days if policy else None,
    }


def set_retention(
    actor: roles.Actor, model_name: str, data: Any, *, ip=None, via: str = "api"
) -> RetentionPolicy:
    """A model's period ({"days": N | null}) and duty ({"duty_days": N | null})."""
    actor.require(roles.READ_MODELS)
    model = RegisteredModel.objects.visible_to(actor).filter(name=model_name).first()
    if model is None:
        raise NotFound(f"No model named {model_name!r}.")
    actor.require(roles.SET_RETENTION)
    refuse_unknown_fields(data, ("days", "duty_days"), "retention")
    if not isinstance(data, dict) or not ({"days", "duty_days"} & data.keys()):
        raise InvalidInput('Send {"days": N} and/or {"duty_days": N} (null: none).')
    errors: dict[str, list[str]] = {}
    values = {name: _days(data, name, errors) for name in ("days", "duty_days") if name in data}
    days = values.get("days")
    duty = values.get("duty_days")
    if days is not None and duty is not None and duty > days:
        errors["duty_days"] = ["A duty to keep inputs longer than the period to keep them."]
    if errors:
        raise InvalidInput("The retention setting is not valid.", details=errors)
    with transaction.atomic():
        policy, _ = RetentionPolicy.objects.select_for_update().get_or_create(
            registered_model=model
        )
        before = {"days": policy.days, "duty_days": policy.duty_days}
        for name, value in values.items():
            setattr(policy, name, value)
        if (policy.days or MAX_DAYS + 1) < (policy.duty_days or 0):
            raise InvalidInput(
                "The retention setting is not valid.",
                details={"duty_days": ["Longer than the period to keep inputs."]},
            )
        policy.updated_by = actor.user if actor.user.is_authenticated else None
        policy.updated_at = timezone.now()
        policy.save()
        record_event(
            SET_EVENT,
            actor=actor,
            target=model,
            ip=ip,
            via=via,
            days=policy.days,
            duty_days=policy.duty_days,
            before=before,
        )
    return policy


def _days(data: dict, name: str, errors: dict[str, list[str]]) -> int | None:
    value = data[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
        errors[name] = [f"A whole number of days from 1 to {MAX_DAYS}, or null."]
        return None
    return value


def run_request(actor: roles.Actor, data: Any) -> tuple[bool, str | None]:
    """(dry_run, model) of a run's body {"dry_run"?: true | false, "model"?: name}, for an
    actor who may run it. Anything but a boolean dry_run is refused by name: "true", 1 or
    null, or a body that is not an object, had run for real."""
    actor.require(roles.SET_RETENTION)
    if not isinstance(data, dict):
        raise InvalidInput('Send {"dry_run"?: true | false, "model"?: name}; nothing was done.')
    refuse_unknown_fields(data, ("dry_run", "model"), "retention run")
    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise InvalidInput.named("dry_run", "must be true or false; nothing was done")
    model_name = data.get("model")
    if model_name is not None and (not isinstance(model_name, str) or not model_name):
        raise InvalidInput.named("model", "must be a model's name; nothing was done")
    return dry_run, model_name


def plan_retention(
    actor: roles.Actor, *, model_name: str | None = None, now: dt.datetime | None = None
) -> list[RetentionRun]:
    """What a run would erase, model by model (those with a period that the actor sees: a
    token narrowed with `--models` runs its models' retention, a hidden model's as missing)."""
    now = now or timezone.now()
    policies = RetentionPolicy.objects.filter(
        days__isnull=False, registered_model__in=RegisteredModel.objects.visible_to(actor)
    ).select_related("registered_model")
    if model_name:
        policies = policies.filter(registered_model__name=model_name)
        if not policies.exists():
            raise NotFound(f"No model named {model_name!r} with a retention period.")
    runs = []
    for policy in policies.order_by("registered_model__name"):
        assert policy.days is not None
        before = now - dt.timedelta(days=policy.days)
        expired = Decision.objects.filter(
            registered_model=policy.registered_model, predicted_at__lt=before
        )
        plan = erasure.plan_erasure(
            expired,
            cause=Erasure.RETENTION,
            reason=f"{policy.registered_model.name}: retention period of {policy.days} days",
        )
        runs.append(RetentionRun(policy.registered_model.name, policy.days, before, plan))
    return runs


def apply_retention(
    actor: roles.Actor,
    *,
    dry_run: bool = False,
    model_name: str | None = None,
    now: dt.datetime | None = None,
    via: str = "command",
    ip=None,
) -> list[RetentionRun]:
    """Erase (or, dry, plan) the inputs past each model's period; one declaration a model."""
    actor.require(roles.SET_RETENTION)
    runs = plan_retention(actor, model_name=model_name, now=now)
    if dry_run:
        record_event(
            PREVIEWED_EVENT,
            actor=actor,
            ip=ip,
            via=via,
            object_type="retention",
            models={run.model: len(run.plan.ids) for run in runs},
        )
        return runs
    for run in runs:
        run.dry_run = False
        erasure.erase(actor, run.plan, via=via)
    return runs


def duty_refusals(decisions, now: dt.datetime | None = None) -> list[str]:
    """Why a retention duty forbids erasing some of `decisions` now (a person's request)."""
    now = now or timezone.now()
    out = []
    policies = RetentionPolicy.objects.filter(duty_days__isnull=False).select_related(
        "registered_model"
    )
    for policy in policies:
        assert policy.duty_days is not None
        since = now - dt.timedelta(days=policy.duty_days)
        young = decisions.filter(registered_model=policy.registered_model, predicted_at__gte=since)
        n = young.count()
        if n:
            out.append(
                f"a retention duty keeps the inputs of {policy.registered_model.name}'s decisions "
                f"{policy.duty_days} days: {n} of the decisions are younger"
            )
    return out
