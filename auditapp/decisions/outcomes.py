"""Recording outcomes: the ground truth of decisions, as it arrives (append-only)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from auditapp.accounts import records, roles
from auditapp.accounts.audit import record_counts_per_model
from auditapp.decisions.models import Decision, Outcome, request_ids_q
from auditapp.decisions.records import OUTCOME
from auditapp.decisions.validation import Window, parse_timestamp, window_error
from auditapp.errors import InvalidInput, PayloadTooLarge
from auditapp.registry.models import RegisteredModel
from auditapp.textcheck import INT64, identifier_problem, text_problem

OUTCOME_FIELDS = frozenset({"request_id", "decision_id", "model", "outcome", "observed_at"})
MAX_OUTCOMES = 10_000


def outcome_items(payload: Any) -> list[Any]:
    items = payload.get("outcomes") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise InvalidInput('The body must be {"outcomes": [...]} with at least one outcome.')
    if len(items) > MAX_OUTCOMES:
        raise PayloadTooLarge(f"At most {MAX_OUTCOMES} outcomes per request; split the batch.")
    return items


def _decisions_for(actor: roles.Actor, items: list[Any]) -> tuple[dict, dict]:
    """Visible decisions named by the items: by id, and by (model, request_id)."""
    ids = {
        i["decision_id"]
        for i in items
        if isinstance(i, dict)
        and type(i.get("decision_id")) is int
        and -INT64 <= i["decision_id"] < INT64
    }
    request_ids: dict[str, set[str]] = defaultdict(set)
    for i in items:
        if isinstance(i, dict) and _storable(i.get("request_id")) and _storable(i.get("model")):
            request_ids[i["model"]].add(i["request_id"])
    # One condition per model, not per item: SQLite refuses expressions deeper than 1,000.
    query = Q(pk__in=ids)
    for model, refs in request_ids.items():
        query |= request_ids_q(refs, model_name=model)
    wanted = ids or request_ids
    found = Decision.objects.visible_to(actor).with_related().filter(query) if wanted else []
    by_id = {d.pk: d for d in found}
    by_ref = {(d.registered_model.name, d.request_id): d for d in by_id.values()}
    return by_id, by_ref


def _storable(value: Any) -> bool:
    """A string the database can compare (a NUL would fail the query, not the item)."""
    return isinstance(value, str) and text_problem(value) is None


def _check(item: Any, by_id: dict, by_ref: dict, window: Window):
    """(decision, outcome value, observed_at) or a list of (field, reason)."""
    if not isinstance(item, dict):
        return [("", "must be an object")]
    errors = [(name, "is not an outcome field") for name in item if name not in OUTCOME_FIELDS]
    for name in ("model", "request_id"):
        if isinstance(item.get(name), str) and (reason := identifier_problem(item[name])):
            errors.append((name, reason))
    if "decision_id" in item:
        decision_id = item["decision_id"]
        decision = by_id.get(decision_id) if type(decision_id) is int else None
        if decision is None:
            errors.append(("decision_id", f"no decision {item['decision_id']!r}"))
    elif "request_id" in item and "model" in item:
        reference = (item["model"], item["request_id"])
        decision = by_ref.get(reference) if all(isinstance(r, str) for r in reference) else None
        if decision is None:
            errors.append(
                ("request_id", f"no decision {item['request_id']!r} of model {item['model']!r}")
            )
    else:
        decision = None
        errors.append(("request_id", "give decision_id, or model and request_id"))
    if "outcome" not in item:
        errors.append(("outcome", "is required"))
    elif decision is not None and (
        reason := decision.model_version.parsed_schema.target.label_error(item["outcome"])
    ):
        errors.append(("outcome", reason))
    observed_at, reason = parse_timestamp(item.get("observed_at"))
    if reason or (reason := window_error(item["observed_at"], observed_at, window)):
        errors.append(("observed_at", reason))
    return errors or (decision, item["outcome"], observed_at)


def check_outcomes(actor: roles.Actor, items: list[Any], now: datetime):
    """The valid outcomes, and every invalid item with its index and reasons."""
    by_id, by_ref = _decisions_for(actor, items)
    valid, invalid = [], []
    window = Window.around(now)
    for index, item in enumerate(items):
        result = _check(item, by_id, by_ref, window)
        if isinstance(result, list):
            request_id = item.get("request_id") if isinstance(item, dict) else None
            invalid.append(
                {
                    "index": index,
                    "request_id": request_id,
                    "errors": [{"field": f, "message": m} for f, m in result],
                }
            )
        else:
            valid.append(result)
    return valid, invalid


def record_outcomes(
    actor: roles.Actor, payload: Any, *, source: str = "api", ip=None
) -> list[dict]:
    """Store every outcome of a request, or none (unknown decisions are named, not dropped)."""
    actor.require(roles.INGEST)
    items = outcome_items(payload)
    now = timezone.now()
    valid, invalid = check_outcomes(actor, items, now)
    if invalid:
        raise InvalidInput(
            f"{len(invalid)} of {len(items)} outcomes are invalid; nothing was stored.",
            code="invalid_outcomes",
            details=invalid,
        )
    return store_outcomes(actor, valid, source=source, ip=ip, now=now)


@transaction.atomic
def store_outcomes(actor, valid, *, source: str, ip=None, now=None) -> list[dict]:
    """Append outcomes; the same outcome observed at the same time is a duplicate."""
    now = now or timezone.now()
    seen = set(
        Outcome.objects.filter(decision__in=[d for d, _, _ in valid]).values_list(
            "decision_id", "observed_at"
        )
    )
    results, new = [], []
    for decision, value, observed_at in valid:
        duplicate = (decision.pk, observed_at) in seen
        seen.add((decision.pk, observed_at))
        if not duplicate:
            new.append(
                Outcome(
                    decision=decision,
                    outcome=value,
                    observed_at=observed_at,
                    recorded_at=now,
                    recorded_by=actor.user if actor.user.is_authenticated else None,
                    source=source,
                )
            )
        results.append(
            {
                "decision_id": decision.pk,
                "request_id": decision.request_id,
                "status": "duplicate" if duplicate else "created",
            }
        )
    Outcome.objects.bulk_create(new)
    records.append(OUTCOME.name, [outcome.pk for outcome in new])
    names = dict(RegisteredModel.objects.values_list("pk", "name"))
    record_counts_per_model(
        "outcomes.recorded",
        Counter(names[d.registered_model_id] for d, _, _ in valid),
        Counter(names[o.decision.registered_model_id] for o in new),
        actor=actor,
        ip=ip,
        object_type="decisions.outcome",
        source=source,
    )
    return results
