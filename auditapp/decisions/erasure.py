"""Erasing decisions' personal inputs while the sealed log still proves the decisions.

A decision recorded in document form 2 (hashing.py) commits to every input: its
content hash covers two salted commitments, not the values. Erasing it keeps the two
commitments in `kept_commitments` (with the declaration's id), sets its inputs to {}
and its salt to null: the document rebuilt from the kept commitments hashes exactly
as before, so verification still proves the model, version, prediction, score,
times, subject reference and request id, and that the inputs were never changed
before they were erased. The values, and the salt that would let anyone test a guess
of them, are gone.

In one transaction: the `Erasure` declaration (cause, reason, the decisions by model
and month, their id ranges) is written, recorded in the log and sealed, then one
set-based UPDATE erases the rows (on PostgreSQL through a temporary table filled by
COPY: the commitments are computed here, once per row, and joined). The append-only
triggers let exactly that UPDATE through for the declared ranges, and nothing else
(auditapp/appendonly.py).

What is not erased, and why (each is said in a plan's lines):
- decisions recorded before form 2 (null `document_form`): their hashes cover the
  non-sensitive inputs in clear; erasing them would make the log unverifiable. They
  are refused (a person's request) or kept (retention), and counted.
- decisions a legal hold covers (decisions/holds.py).
- decisions whose inputs were copied into rows that cannot be erased yet: the apps
  holding copies register here (`register_copies`, with an eraser run in the same
  transaction: counterfactual results, notices' files); a holder without one blocks
  the erasure of the decisions it holds copies of, as what-if audit events do (sealed
  events whose details hold the values a reviewer changed).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.db import connection, transaction
from django.db.models import CharField, QuerySet
from django.db.models.functions import Cast

from auditapp.accounts import records, roles
from auditapp.accounts.audit import id_runs, record_event
from auditapp.accounts.models import AuditEvent
from auditapp.appendonly import ERASURE_SETTING, declaration_time
from auditapp.decisions import holds
from auditapp.decisions.models import Decision, ErasedRange, Erasure
from auditapp.decisions.sealing import seal_new_records
from auditapp.encryption import merged, row_binding
from auditapp.errors import Conflict
from auditapp.hashing import COMMITTED_FORM, canonical_json, input_commitments
from auditapp.registry.models import ModelVersion
from explain.schema import parse_schema

logger = logging.getLogger(__name__)
CHUNK = 10_000  # ids a statement names, where there is no COPY (SQLite)
ERASED_EVENT = "decisions.erased"
WHAT_IF_EVENT = "decision.what_if"  # explain/whatif.py: its details copy input values


@dataclass(frozen=True)
class CopyHolder:
    """Rows of another app that copy decisions' input values."""

    label: str  # "counterfactual results"
    holding: Callable[[QuerySet], set[int]]  # decisions -> the ids of those it copies
    erase: Callable[[list[int]], int] | None = None  # decision ids -> copies erased


_COPY_HOLDERS: dict[str, CopyHolder] = {}


def register_copies(holder: CopyHolder) -> None:
    """Called at start-up by an app whose rows copy input values (its apps.py ready())."""
    _COPY_HOLDERS[holder.label] = holder


def _what_if_events(decisions: QuerySet) -> set[int]:
    """Decisions a what-if was tried on: the event copies the values it changed."""
    ids = decisions.annotate(text=Cast("id", CharField())).values("text")
    events = AuditEvent.objects.filter(
        action=WHAT_IF_EVENT, object_type=Decision._meta.label_lower, object_id__in=ids
    )
    return {int(pk) for pk in events.values_list("object_id", flat=True)}


def refuse_erased(decision: Decision, what: str) -> None:
    """409 "inputs_erased" for work on a decision whose inputs were erased: an explanation
    asked for again failed for want of inputs, and took the kept attributions with it."""
    if decision.erased:
        raise Conflict(
            f"Decision {decision.pk}'s personal inputs were erased: {what} cannot be "
            "computed on them any more (what was computed before is kept).",
            code="inputs_erased",
        )


@dataclass
class ErasurePlan:
    """What an erasure would do, and what it spares and why."""

    cause: str
    reason: str
    subject_ref: str = ""
    ids: list[int] = field(default_factory=list)  # the decisions to erase
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> month -> n
    older_form: int = 0  # recorded before document form 2: cannot be erased
    already: int = 0  # erased before
    held: dict[int, int] = field(default_factory=dict)  # hold id -> decisions it spares
    copies: dict[str, int] = field(default_factory=dict)  # holder -> decisions it blocks
    erased_copies: dict[str, int] = field(default_factory=dict)
    declaration: Erasure | None = None
    newest_hold: int = 0  # the newest hold's id when planned: a later one stops the erasure

    @property
    def refusals(self) -> list[str]:
        """Why not every decision asked for can be erased (a person's request is refused)."""
        out = []
        if self.held:
            names = ", ".join(f"#{pk}" for pk in sorted(self.held))
            out.append(f"legal hold {names} covers {sum(self.held.values())} of the decisions")
        if self.older_form:
            out.append(
                f"{self.older_form} decisions were recorded before document form 2: their "
                "content hash covers their inputs in clear, so erasing them would break the "
                "proof"
            )
        for label, n in self.copies.items():
            out.append(f"{label} copy the inputs of {n} decisions and cannot be erased yet")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "decisions": len(self.ids),
            "by_model": self.by_model,
            "older_form": self.older_form,
            "already_erased": self.already,
            "held": {str(pk): n for pk, n in self.held.items()},
            "blocked_by_copies": self.copies,
            "copies_erased": self.erased_copies,
            "declaration": self.declaration.pk if self.declaration else None,
        }


def plan_erasure(
    decisions: QuerySet, *, cause: str, reason: str, subject_ref: str = ""
) -> ErasurePlan:
    """Which of `decisions` would be erased; the rest counted by why they are spared."""
    plan = ErasurePlan(cause=cause, reason=reason, subject_ref=subject_ref)
    plan.newest_hold = holds.newest_hold_id()  # before the holds are read (see erase)
    decisions = decisions.order_by()
    plan.already = decisions.filter(kept_commitments__isnull=False).count()
    candidates = decisions.filter(kept_commitments__isnull=True)
    plan.older_form = candidates.exclude(document_form=COMMITTED_FORM).count()
    candidates = candidates.filter(document_form=COMMITTED_FORM)
    for hold in holds.active_holds():
        spared = candidates.filter(hold.covers_q()).count()
        if spared:
            plan.held[hold.pk] = spared
    candidates = candidates.exclude(holds.covered_q())
    blockers = {"what-if audit events": _what_if_events, **_blocking_holders()}
    for label, holding in blockers.items():
        blocked = holding(candidates)
        if blocked:
            plan.copies[label] = len(blocked)
            candidates = candidates.exclude(pk__in=sorted(blocked))
    months: dict[str, Counter[str]] = defaultdict(Counter)
    for pk, model, predicted_at in candidates.values_list(
        "id", "registered_model__name", "predicted_at"
    ).order_by("id"):
        plan.ids.append(pk)
        months[model][f"{predicted_at:%Y-%m}"] += 1
    plan.by_model = {model: dict(sorted(c.items())) for model, c in sorted(months.items())}
    return plan


def _blocking_holders() -> dict[str, Callable[[QuerySet], QuerySet]]:
    return {h.label: h.holding for h in _COPY_HOLDERS.values() if h.erase is None}


def erase(actor: roles.Actor, plan: ErasurePlan, *, via: str = "api") -> ErasurePlan:
    """Declare, seal, then erase the plan's decisions (inside the caller's transaction or
    one of its own). Nothing to erase: nothing is declared."""
    if not plan.ids:
        return plan
    with transaction.atomic():
        seal_new_records()
        # From the seal on, this transaction holds the sealing lock, which placing a hold
        # takes too (its log record): a hold is committed before this point, and seen
        # here, or after the erasure. The plan read the holds earlier.
        if placed := holds.active_holds(after=plan.newest_hold):
            names = ", ".join(str(hold.pk) for hold in placed)
            raise Conflict(
                f"legal hold {names} was placed while this erasure was planned: nothing "
                "was erased; plan it again to spare what the hold covers.",
                code="hold_placed",
            )
        started = time.perf_counter()
        kept = _commitments(plan.ids)  # before declaring: only what is still there
        if len(kept) != len(plan.ids):
            raise Conflict(
                f"{len(plan.ids) - len(kept)} of the {len(plan.ids)} decisions were erased "
                "meanwhile (another erasure, planned at the same time): nothing was "
                "erased; plan it again.",
                code="erased_meanwhile",
            )
        commitments_ms = (time.perf_counter() - started) * 1000
        declaration = _declare(actor, plan)
        seal_new_records()  # the declaration's record: the triggers want it sealed
        rows = [(pk, canonical_json({**c, "erasure": declaration.pk})) for pk, c in kept]
        started = time.perf_counter()
        _update(rows, declaration.pk)  # (the erasure setting stays on for the copies)
        logger.info(
            "decisions.erased declaration=%s n=%s commitments_ms=%.0f update_ms=%.0f",
            declaration.pk,
            len(rows),
            commitments_ms,
            (time.perf_counter() - started) * 1000,
        )
        for holder in _COPY_HOLDERS.values():
            if holder.erase is not None:
                erased = holder.erase(plan.ids)
                if erased:
                    plan.erased_copies[holder.label] = erased
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config(%s, '', true)", [ERASURE_SETTING])
        plan.declaration = declaration
        record_event(
            ERASED_EVENT,
            actor=actor,
            via=via,
            object_type="erasure",
            object_id=str(declaration.pk),
            cause=plan.cause,
            decisions=len(plan.ids),
            by_model=plan.by_model,
            held={str(k): v for k, v in plan.held.items()},
            copies_erased=plan.erased_copies,
        )
    return plan


def _declare(actor: roles.Actor, plan: ErasurePlan) -> Erasure:
    user = actor.user if actor.user.is_authenticated else None
    ranges = [tuple(run) for run in id_runs(plan.ids)]
    declaration = Erasure(
        cause=plan.cause,
        reason=plan.reason,
        subject_ref=plan.subject_ref,
        declared_at=declaration_time(),
        declared_by=user,
        actor_name=actor.label,
        decisions=len(plan.ids),
        scope={"ranges": [list(r) for r in ranges], "by_model": plan.by_model},
    )
    declaration.save(force_insert=True)
    ErasedRange.objects.bulk_create(
        ErasedRange(erasure=declaration, first_id=a, last_id=b) for a, b in ranges
    )
    records.append("erasure", [declaration.pk])
    return declaration


def _commitments(ids: list[int]) -> list[tuple[int, dict[str, str]]]:
    """(id, the commitments to keep) of each decision still holding its values.

    Plain rows, not model objects: a decision object would bring its version's row (its
    schema, card and settings decoded again for every decision). On PostgreSQL the rows
    are joined to the ids COPYed into a temporary table (no statement with 100,000
    parameters); elsewhere read by chunks of ids.
    """
    sensitive: dict[int, frozenset[str]] = {}
    out = []
    for pk, version_id, inputs, salt, model_id, request_id, sealed in _erasing_rows(ids):
        if salt is None:  # erased meanwhile: left out, and the caller says so
            continue
        if version_id not in sensitive:
            schema = ModelVersion.objects.values_list("schema", flat=True).get(pk=version_id)
            sensitive[version_id] = parse_schema(schema).sensitive_names
        values = merged(  # the sensitive values are sealed (encryption at rest)
            orjson.loads(inputs),
            None if sealed is None else bytes(sealed),
            row_binding(model_id, request_id),
        )
        out.append((pk, input_commitments(values, sensitive[version_id], bytes(salt))))
    return out


def _erasing_rows(ids: list[int]):
    """(id, version id, inputs as JSON text, salt, model id, request_id, sealed inputs) of
    the decisions to erase."""
    table = Decision._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE TEMPORARY TABLE attest_erasing_ids (id bigint PRIMARY KEY) ON COMMIT DROP"
            )
            with cursor.cursor.copy("COPY attest_erasing_ids (id) FROM STDIN") as copy:
                for pk in ids:
                    copy.write_row((pk,))
            cursor.execute(
                "SELECT d.id, d.model_version_id, d.inputs::text, d.salt, "
                f"d.registered_model_id, d.request_id, d.sealed_inputs FROM {table} d "
                "JOIN attest_erasing_ids e ON e.id = d.id"
            )
            yield from cursor.fetchall()
            cursor.execute("DROP TABLE attest_erasing_ids")
            return
        for at in range(0, len(ids), CHUNK):
            chunk = ids[at : at + CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(
                f"SELECT id, model_version_id, inputs, salt, registered_model_id, request_id, "
                f"sealed_inputs FROM {table} WHERE id IN ({marks})",
                chunk,
            )
            yield from cursor.fetchall()


def _update(rows: list[tuple[int, str]], declaration_id: int) -> None:
    """One set-based UPDATE: inputs to {}, salt and the sealed (encrypted) inputs with
    their blind-index tokens to null, the commitments kept."""
    table = Decision._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT set_config(%s, %s, true)", [ERASURE_SETTING, str(declaration_id)]
            )
            cursor.execute(
                "CREATE TEMPORARY TABLE attest_erasing (id bigint PRIMARY KEY, kept jsonb) "
                "ON COMMIT DROP"
            )
            with cursor.cursor.copy("COPY attest_erasing (id, kept) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                f"UPDATE {table} AS d SET inputs = '{{}}'::jsonb, salt = NULL, "
                "sealed_inputs = NULL, sensitive_tokens = NULL, "
                "kept_commitments = e.kept FROM attest_erasing AS e WHERE d.id = e.id"
            )
            updated = cursor.rowcount
            cursor.execute("DROP TABLE attest_erasing")
        else:
            updated = 0
            for at in range(0, len(rows), CHUNK):
                cursor.executemany(
                    f"UPDATE {table} SET inputs = '{{}}', salt = NULL, sealed_inputs = NULL, "
                    "sensitive_tokens = NULL, kept_commitments = %s "
                    "WHERE id = %s AND kept_commitments IS NULL",
                    [(kept, pk) for pk, kept in rows[at : at + CHUNK]],
                )
                updated += cursor.rowcount
    if updated != len(rows):
        raise Conflict(
            f"{updated} decisions erased where {len(rows)} were declared: some were erased "
            "meanwhile. Nothing was erased: run it again.",
            code="erasure_raced",
        )
