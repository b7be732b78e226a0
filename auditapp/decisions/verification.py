"""Verifying the whole log: every content hash recomputed from the stored fields, the tree
rebuilt, every signature checked, and the first record or seal that does not match named.

A seal kept outside the database lets a later verification prove that nothing up
to it was rewritten, even by someone able to recompute and re-sign everything.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection

from auditapp import textcheck
from auditapp.accounts import records, roles
from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent, LogRecord
from auditapp.decisions import log, merkle, signing
from auditapp.decisions.models import INGESTED_EVENT, Decision, Retirement, Seal
from auditapp.decisions.rehashing import CHUNK, decision_hashes, event_hashes, record_hashes
from auditapp.decisions.sealing import (
    GENESIS,
    MAX_SEAL_ROWS,
    MAX_TREE_SIZE,
    SEALED_TABLES,
    exported_seal,
)
from auditapp.errors import InvalidInput
from auditapp.hashing import (
    canonical_time,
    sha256_hex,
)
from auditapp.snapshots import one_moment

# --- verification ------------------------------------------------------------------

VERIFIED_EVENT = "chain.verified"  # a verification of the whole log, and its result


@dataclass
class Verification:
    ok: bool = True
    decisions: int = 0
    events: int = 0
    records: dict[str, int] = field(default_factory=dict)  # rows of each other kind checked
    seals: int = 0
    unsealed_decisions: int = 0
    unsealed_events: int = 0
    unsealed_records: int = 0
    first_bad: dict[str, Any] | None = None
    latest_seal: dict[str, Any] | None = None
    checked_against: dict[str, Any] | None = None
    retired: list[dict[str, Any]] = field(default_factory=list)  # one per declaration
    _problems: list[tuple[tuple[int, int, int], dict[str, Any]]] = field(
        default_factory=list, repr=False
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "decisions": self.decisions,
            "events": self.events,
            "records": self.records,
            "records_checked": sum(self.records.values()),
            "seals": self.seals,
            "unsealed_decisions": self.unsealed_decisions,
            "unsealed_events": self.unsealed_events,
            "unsealed_records": self.unsealed_records,
            "first_bad": self.first_bad,
            "latest_seal": self.latest_seal,
            "checked_against": self.checked_against,
            "retired": self.retired,
        }

    def problems(self) -> list[dict[str, Any]]:
        """Everything found, in log order (first_bad is the first of them)."""
        return [what for _, what in sorted(self._problems, key=lambda item: item[0])]

    def problem(self, seal_index: int, order: int, **what: Any) -> None:
        """Note a mismatch; the first in log order is reported: by seal, then within a seal
        its own problems, its decisions, its events, its records (`order`: the row's id)."""
        rank = {"seal": -1, "decision": 0, "event": 1}.get(str(what.get("kind")), 2)
        self._problems.append(((seal_index, rank, order), what))


def verify_as(
    actor: roles.Actor,
    *,
    against: dict[str, Any] | None = None,
    ip: str | None = None,
    via: str = "api",
    progress: Callable[[str, int], None] | None = None,
    processes: bool = False,
) -> Verification:
    """Verify for someone allowed to; the verification and its result are audit events."""
    actor.require(roles.VERIFY_CHAIN)
    result = verify_chain(against=against, progress=progress, processes=processes)
    note_verified(actor, result, ip=ip, via=via)
    return result


def note_verified(
    actor: roles.Actor, result: Verification, *, ip: str | None, via: str, **more: Any
) -> None:
    record_event(
        VERIFIED_EVENT,
        actor=actor,
        ip=ip,
        via=via,
        ok=result.ok,
        decisions=result.decisions,
        events=result.events,
        seals=result.seals,
        first_bad=result.first_bad,
        against=result.checked_against,
        **more,
    )


def verify_chain(
    against: dict[str, Any] | None = None,
    progress: Callable[[str, int], None] | None = None,
    *,
    processes: bool = False,
) -> Verification:
    """Recompute every content hash, the tree and every signature; name the first mismatch.

    Beyond the hashes: times must not go back (each row against the one before
    it and against the seals around it, see `_Clock`), every decision must be
    named by the ingestion event that recorded it, and every record's row must
    still hash to what was recorded (`_check_record_rows`).

    `processes`: hash decisions in worker processes where that is safe (see
    `_can_use_processes`); only `manage.py verify_chain` asks for it: a web
    process must never fork, and a Celery prefork child may not.
    """
    if against is not None:
        check_kept_seal(against)
    result = Verification()
    seals = list(Seal.objects.order_by("index"))
    result.seals = len(seals)
    roots = _check_seals(seals, result)
    sealed = {kind: _sealed(seals, kind) for kind in log.NAMES}
    clock = _Clock(seals)
    declared = _Declared(list(Retirement.objects.order_by("id")))
    rows = {
        "decision": decision_hashes(processes),
        "event": event_hashes(),
        "record": record_hashes(),
    }
    decision_ids: list[int] = []  # read once, for the ingestion events' reconciliation too
    counts = {
        kind: _check_rows(
            kind,
            rows[kind],
            sealed[kind],
            clock,
            result,
            progress,
            declared,
            seen=decision_ids if kind == "decision" else None,
        )
        for kind in log.NAMES
    }
    result.decisions, result.events = counts["decision"], counts["event"]
    with one_moment():  # a row and its record (or ingestion event) are committed together
        recorded, misplaced = _recorded()
        for record_kind in records.kinds():
            result.records[record_kind.name] = _check_record_rows(
                record_kind,
                recorded.get(record_kind.name, {}),
                misplaced.get(record_kind.name),
                sealed["record"],
                result,
                declared,
            )
        # The decisions read above were each committed with the event that recorded it,
        # which this later snapshot holds.
        _reconcile_ingestion(sealed["decision"], result, decision_ids)
    declared.report(result)
    if against is not None:
        _check_against(against, seals, roots, result)
    if seals:
        result.latest_seal = exported_seal(seals[-1])
    if result._problems:
        result.ok = False
        result.first_bad = min(result._problems, key=lambda item: item[0])[1]
    return result


PERIOD_SCOPE = (
    "the seals (each one's fields, its tree rebuilt from its leaves, its signature); "
    "every sealed decision of the log still present or retired by a declaration; and "
    "each decision of the period: its content hash recomputed from its stored fields "
    "and matched with the leaf sealed for it (not sealed yet: with its stored hash), "
    "none inserted inside a sealed range, none backdated, "
    "each named by the ingestion event that recorded it"
)
PERIOD_NOT_CHECKED = (
    "other periods' and versions' decisions, audit events and the log's other records "
    "(explanations, outcomes, reviews...) are not recomputed here: the whole log's "
    "verification (verify_chain) checks them"
)


def verify_period(
    model_version_id: int, start: datetime, end: datetime, *, processes: bool = False
) -> Verification:
    """What the log proves about one version's decisions predicted in [start, end).

    PERIOD_SCOPE says what is checked, PERIOD_NOT_CHECKED what is not. The seals are
    checked as verify_chain checks them, so a leaf they hold is the log's as signed;
    each decision of the period is then checked as verify_chain checks it, its time
    held against the seals around it and the period's decisions written before it (a
    subset of the rows verify_chain holds it against). A sealed decision deleted since
    cannot say which period it was in: every sealed id of the log must still be present.

    `result.decisions` counts the period's decisions checked; events and records are
    not (0).
    """
    result = Verification()
    seals = list(Seal.objects.order_by("index"))
    result.seals = len(seals)
    _check_seals(seals, result)
    sealed = _sealed(seals, "decision")
    clock = _Clock(seals)
    declared = _Declared(list(Retirement.objects.order_by("id")))
    _check_sealed_present(sealed, result, declared)
    adapt = connection.ops.adapt_datetimefield_value
    chosen = "model_version_id = %s AND predicted_at >= %s AND predicted_at < %s"
    rows = decision_hashes(processes, chosen, (model_version_id, adapt(start), adapt(end)))
    ids = _check_period_rows(rows, sealed, clock, result)
    result.decisions = len(ids)
    _reconcile_ingestion(sealed, result, ids)
    if seals:
        result.latest_seal = exported_seal(seals[-1])
    if result._problems:
        result.ok = False
        result.first_bad = min(result._problems, key=lambda item: item[0])[1]
    return result


def _check_sealed_present(sealed: _Sealed, result: Verification, declared: _Declared) -> None:
    """Every sealed decision id is still a row, or a retirement declaration lists it."""
    if not len(sealed.ids):
        return
    present = np.fromiter(
        Decision.objects.order_by("id").values_list("id", flat=True).iterator(chunk_size=CHUNK),
        dtype="<i8",
    )
    table = SEALED_TABLES["decision"]._meta.db_table
    for pointer in np.flatnonzero(~np.isin(sealed.ids, present)).tolist():
        _missing("decision", sealed, pointer, result, declared, table)


def _check_period_rows(
    rows: Iterator[list[tuple[int, bytes, str, str]]],
    sealed: _Sealed,
    clock: _Clock,
    result: Verification,
) -> list[int]:
    """Each recomputed hash against its sealed leaf (or stored hash); the ids, in order."""
    ids: list[int] = []
    total = len(sealed.ids)
    last_sealed = int(sealed.ids[-1]) if total else 0
    sealed_ids, leaves, parse = sealed.ids.tolist(), sealed.leaves, datetime.fromisoformat
    unsealed, previous_time = 0, None

    def bad(seal_index: int | None, row_id: int, reason: str) -> None:
        order = UNSEALED if seal_index is None else seal_index
        result.problem(order, row_id, kind="decision", id=row_id, seal=seal_index, reason=reason)

    for chunk in rows:
        chunk_ids = [row[0] for row in chunk]
        positions = np.searchsorted(sealed.ids, chunk_ids).tolist() if total else []
        for n, (row_id, recomputed, stored, time_text) in enumerate(chunk):
            seal_index = None
            position = positions[n] if total else total
            if position < total and sealed_ids[position] == row_id:
                seal_index = int(sealed.seal_of[position])
                if recomputed != leaves[32 * position : 32 * position + 32]:
                    bad(seal_index, row_id, CHANGED)
                elif recomputed.hex() != stored:
                    bad(seal_index, row_id, "its content_hash column was changed")
            elif row_id <= last_sealed:
                seal_index = int(sealed.seal_of[min(position, total - 1)])
                bad(seal_index, row_id, "it was inserted inside a sealed range")
            else:
                unsealed += 1
                if recomputed.hex() != stored:
                    bad(None, row_id, CHANGED_UNSEALED)
            at = parse(time_text)
            if reason := clock.problem(at, previous_time, seal_index):
                bad(seal_index, row_id, reason)
            previous_time = at if previous_time is None else max(previous_time, at)
        ids += chunk_ids
    result.unsealed_decisions = unsealed
    return ids


def _check_seals(seals: list[Seal], result: Verification) -> dict[int, str]:
    """Each seal's own fields, its place in the log, its tree and its signature.

    Returns the root rebuilt from the leaves at each seal's size.
    """
    keys = signing.known_keys()
    key_rank = {key_id: rank for rank, key_id in enumerate(keys)}  # retired oldest first
    newest_rank, newest_key = -1, None
    roots: dict[int, str] = {}
    size, last_ids = 0, dict.fromkeys(log.NAMES, 0)
    last_time = None
    for position, (seal, root, tree_problem) in enumerate(log.rebuild(seals)):

        def bad(reason: str, seal: Seal = seal) -> None:
            # a seal's own problems come before those of its rows
            result.problem(seal.index, -1, kind="seal", index=seal.index, reason=reason)

        roots[seal.tree_size] = root
        if seal.index != position:
            result.problem(position, -1, kind="seal", index=position, reason="missing")
        if seal.first_leaf != size:
            bad("its first leaf does not follow the seal before it")
        if last_time is not None and seal.sealed_at < last_time:
            bad("it is dated before the seal before it")
        last_time = max(last_time or seal.sealed_at, seal.sealed_at)
        appended = 0
        for kind in log.NAMES:
            ids = np.frombuffer(bytes(getattr(seal, f"{kind}_ids")), dtype="<i8")
            leaves = bytes(getattr(seal, f"{kind}_leaves"))
            count, seal_last = getattr(seal, f"{kind}_count"), getattr(seal, f"last_{kind}_id")
            if len(ids) != count or len(leaves) != 32 * count:
                bad(f"its {kind} leaves do not match its {kind} count")
            last_id = last_ids[kind]
            expected_last = int(ids[-1]) if len(ids) else (last_id or None)
            increasing = bool(np.all(np.diff(ids) > 0)) and (not len(ids) or ids[0] > last_id)
            if seal_last != expected_last or not increasing:
                bad(f"its {kind} range is wrong")
            last_ids[kind] = max(last_id, seal_last or 0)
            appended += len(leaves) // 32
        if seal.tree_size != seal.first_leaf + appended:
            bad("its tree_size does not match its leaves")
        if tree_problem:
            bad(tree_problem)
        if signature_problem := signing.seal_signature_problem(exported_seal(seal), keys):
            bad(signature_problem)
        elif (rank := key_rank.get(seal.key_id, 0)) < newest_rank:
            # a retired key signs nothing after its successor took over: whoever kept
            # the old seed cannot add seals that pass (a rollback is named, too)
            bad(f"it is signed by retired key {seal.key_id} after key {newest_key} took over")
        else:
            newest_rank, newest_key = rank, seal.key_id
        size = seal.tree_size
    return roots


@dataclass
class _Sealed:
    """The ids and content hashes of one kind of record over the whole log, and their seals."""

    ids: np.ndarray
    leaves: bytes
    seal_of: np.ndarray  # seal index per position

    def seal_holding(self, row_id: int) -> int | None:
        """The index of the seal that appended this id, None if none did."""
        position = int(np.searchsorted(self.ids, row_id))
        if position < len(self.ids) and self.ids[position] == row_id:
            return int(self.seal_of[position])
        return None


def _sealed(seals: list[Seal], kind: str) -> _Sealed:
    ids_parts, leaf_parts, seal_parts = [], [], []
    for seal in seals:
        ids = np.frombuffer(bytes(getattr(seal, f"{kind}_ids")), dtype="<i8")
        ids_parts.append(ids)
        leaf_parts.append(bytes(getattr(seal, f"{kind}_leaves")))
        seal_parts.append(np.full(len(ids), seal.index, dtype="<i8"))
    if not ids_parts:
        empty = np.zeros(0, dtype="<i8")
        return _Sealed(empty, b"", empty)
    return _Sealed(np.concatenate(ids_parts), b"".join(leaf_parts), np.concatenate(seal_parts))


UNSEALED = 1 << 62  # the order of problems with rows no seal holds yet: after every seal's
CHANGED = "its stored fields do not match the content hash it was sealed with"
CHANGED_UNSEALED = "its stored fields do not match its content hash (not sealed yet)"


class _Clock:
    """Times in the log must not go back: backdating a row is named, not just hashed along.

    A row may not be dated more than the tolerance (ATTEST_LOG_CLOCK_TOLERANCE)
    before the row of its kind written before it, before the seal preceding the
    one that holds it (it was written after that seal's horizon), nor after the
    seal that holds it. Rows of one kind are written by concurrent transactions
    and hosts whose clocks differ slightly; the tolerance absorbs that, while a
    row dated a day back cannot hide. Writers take their time after the sealing
    lock (`appendonly.hold_insert_order`), so the bounds hold by construction.
    """

    def __init__(self, seals: list[Seal]) -> None:
        self.tolerance = timedelta(seconds=settings.ATTEST_LOG_CLOCK_TOLERANCE)
        self.sealed_at = [seal.sealed_at for seal in seals]
        # Per seal, the index of the last seal before it that took in everything written
        # before it was made (None: no such seal). A backlog sealed in parts holds, in each
        # part after the first, rows recorded before the part before it was made.
        self.follows: list[int | None] = []
        whole = None
        for index, seal in enumerate(seals):
            self.follows.append(whole)
            if not _cut(seal):
                whole = index
        self.follows.append(whole)  # for rows not sealed yet

    def problem(
        self, at: datetime, previous: datetime | None, seal_index: int | None
    ) -> str | None:
        slack = self.tolerance
        if previous is not None and at < previous - slack:
            return (
                f"it is dated {canonical_time(at)}, before the row written before it "
                f"({canonical_time(previous)}): backdated"
            )
        after = self.follows[seal_index if seal_index is not None else len(self.sealed_at)]
        if after is not None and at < self.sealed_at[after] - slack:
            return (
                f"it is dated {canonical_time(at)}, before seal {after} "
                f"({canonical_time(self.sealed_at[after])}) that it follows: backdated"
            )
        if seal_index is not None and at > self.sealed_at[seal_index] + slack:
            return f"it is dated {canonical_time(at)}, after seal {seal_index} that holds it"
        return None


def _cut(seal: Seal) -> bool:
    """Whether a seal stopped at its row limit before the rest of its backlog (sealed
    before `cut` was kept: whether a kind filled the default limit)."""
    if seal.cut is not None:
        return seal.cut
    counts = (seal.decision_count, seal.event_count, seal.record_count)
    return MAX_SEAL_ROWS in counts


def _check_rows(
    kind: str,
    rows: Iterator[list[tuple[int, bytes, str, str]]],
    sealed: _Sealed,
    clock: _Clock,
    result: Verification,
    progress: Callable[[str, int], None] | None,
    declared: _Declared,
    seen: list[int] | None = None,
) -> int:
    """Walk rows in id order beside the sealed ids: note deleted, inserted, changed, backdated.

    A sealed row missing inside a range a retirement declaration lists is retired, not deleted.
    `seen`, if given, gets every row's id, in order.
    """
    table = SEALED_TABLES[kind]._meta.db_table
    count, pointer, total = 0, 0, len(sealed.ids)
    last_sealed = int(sealed.ids[-1]) if total else 0
    unsealed = 0
    sealed_ids = sealed.ids.tolist()
    leaves = sealed.leaves
    previous_time = None
    parse = datetime.fromisoformat

    def bad(seal_index: int | None, row_id: int, reason: str) -> None:
        order = UNSEALED if seal_index is None else seal_index
        result.problem(order, row_id, kind=kind, id=row_id, seal=seal_index, reason=reason)

    for chunk in rows:
        for row_id, recomputed, stored, time_text in chunk:
            while pointer < total and sealed_ids[pointer] < row_id:
                _missing(kind, sealed, pointer, result, declared, table)
                pointer += 1
            seal_index = None
            if pointer < total and sealed_ids[pointer] == row_id:
                seal_index = int(sealed.seal_of[pointer])
                if recomputed != leaves[32 * pointer : 32 * pointer + 32]:
                    bad(seal_index, row_id, CHANGED)
                elif recomputed.hex() != stored:
                    bad(seal_index, row_id, "its content_hash column was changed")
                pointer += 1
            elif row_id <= last_sealed:
                seal_index = int(sealed.seal_of[min(pointer, total - 1)])
                bad(seal_index, row_id, "it was inserted inside a sealed range")
            else:
                unsealed += 1
                if recomputed.hex() != stored:
                    bad(None, row_id, CHANGED_UNSEALED)
            at = parse(time_text)
            if reason := clock.problem(at, previous_time, seal_index):
                bad(seal_index, row_id, reason)
            previous_time = at if previous_time is None else max(previous_time, at)
        count += len(chunk)
        if seen is not None:
            seen += [row[0] for row in chunk]
        if progress:
            progress(kind, count)
    while pointer < total:
        _missing(kind, sealed, pointer, result, declared, table)
        pointer += 1
    setattr(result, f"unsealed_{kind}s", unsealed)
    return count


def _missing(
    kind: str, sealed: _Sealed, pointer: int, result: Verification, declared: _Declared, table: str
) -> None:
    row_id, seal_index = int(sealed.ids[pointer]), int(sealed.seal_of[pointer])
    if declared.retired(table, row_id):
        return
    result.problem(
        seal_index, row_id, kind=kind, id=row_id, seal=seal_index, reason="it was deleted"
    )


def _recorded() -> tuple[
    dict[str, dict[int, tuple[int, str, datetime | None, int]]], dict[str, int]
]:
    """Per kind and object id: (its latest record's id and hash, its first record's time, count);
    and per kind, a backfilled record that follows regular ones, if any.

    The time is None for a row recorded by an upgrade's backfill (its own time
    predates its record); such records must precede every other of their kind,
    or the mark would exempt a forged row from the time rule.
    """
    recorded: dict[str, dict[int, tuple[int, str, datetime | None, int]]] = {}
    last_backfilled: dict[str, int] = {}
    first_regular: dict[str, int] = {}
    rows = (
        LogRecord.objects.order_by("kind", "object_id", "id")
        .values_list("kind", "id", "object_id", "content_hash", "recorded_at", "backfilled")
        .iterator(chunk_size=CHUNK)
    )
    for kind, record_id, object_id, digest, at, backfilled in rows:
        if backfilled:
            last_backfilled[kind] = max(last_backfilled.get(kind, 0), record_id)
        else:
            first_regular[kind] = min(first_regular.get(kind, record_id), record_id)
        of_kind = recorded.setdefault(kind, {})
        first = of_kind.get(object_id)
        if first is None:
            of_kind[object_id] = (record_id, digest, None if backfilled else at, 1)
        else:
            of_kind[object_id] = (record_id, digest, first[2], first[3] + 1)
    misplaced = {
        kind: last for kind, last in last_backfilled.items() if last > first_regular.get(kind, last)
    }
    return recorded, misplaced


def _check_record_rows(
    record_kind: records.RecordKind,
    recorded: dict[int, tuple[int, str, datetime | None, int]],
    misplaced_backfill: int | None,
    sealed: _Sealed,
    result: Verification,
    declared: _Declared,
) -> int:
    """The rows of one kind against their records: every row recorded, and as it is now.

    Records (LogRecord rows) are checked against the seals like decisions; this
    checks what they stand for. A row's document is rebuilt from its stored
    values and hashed: it must equal its latest record. A row without a record,
    a record whose row is gone, a second record of an insert-only row, and a row
    dated away from the time it was recorded (backdated) are named.
    """
    name = record_kind.name

    def bad(record_id: int | None, object_id: int, reason: str) -> None:
        seal_index = sealed.seal_holding(record_id) if record_id is not None else None
        order = UNSEALED if seal_index is None else seal_index
        result.problem(
            order,
            record_id or 0,
            kind=name,
            label=record_kind.label,
            id=object_id,
            record=record_id,
            seal=seal_index,
            reason=reason,
        )

    tolerance = timedelta(seconds=settings.ATTEST_LOG_CLOCK_TOLERANCE)
    if misplaced_backfill is not None:
        bad(misplaced_backfill, 0, "a record marked as written by an upgrade follows regular ones")
    count = 0
    for row in records.values_of(record_kind).iterator(chunk_size=CHUNK):
        count += 1
        object_id = row["pk"]
        found = recorded.pop(object_id, None)
        if found is None:
            bad(None, object_id, "it is not in the log: no record of it was written")
            continue
        record_id, digest, first_at, times = found
        if records.record_hash(name, object_id, record_kind.document(row)) != digest:
            bad(record_id, object_id, "its stored fields do not match its latest record")
        if times > 1 and not record_kind.stateful:
            bad(record_id, object_id, f"it was recorded {times} times; it is insert-only")
        made_at = row.get(record_kind.time_field) if record_kind.time_field else None
        if made_at is not None and first_at is not None and abs(made_at - first_at) > tolerance:
            bad(
                record_id,
                object_id,
                f"it is dated {canonical_time(made_at)} but was recorded "
                f"{canonical_time(first_at)}: backdated",
            )
    table = record_kind.model._meta.db_table
    for object_id, (record_id, *_) in recorded.items():
        if not declared.retired(table, object_id):
            bad(record_id, object_id, "it was deleted: its record remains")
    for object_id, reason in record_kind.consistency() if record_kind.consistency else ():
        bad(None, object_id, reason)
    return count


def disjoint(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Declared (first, last, declaration) ranges of one table cut into disjoint ones, each
    given to the earliest declaration covering it: the ranges of different declarations
    may overlap (a month partition detached after rows inside it went with an earlier
    month), and a missing row counts to the declaration that retired it first."""
    points = sorted({first for first, _, _ in ranges} | {last + 1 for _, last, _ in ranges})
    pending = sorted(ranges)
    active: list[tuple[int, int]] = []  # (declaration, last) heap: the earliest on top
    out: list[tuple[int, int, int]] = []
    start = 0
    for i, point in enumerate(points[:-1]):
        while start < len(pending) and pending[start][0] <= point:
            heapq.heappush(active, (pending[start][2], pending[start][1]))
            start += 1
        while active and active[0][1] < point:
            heapq.heappop(active)
        if not active:
            continue
        declaration, end = active[0][0], points[i + 1] - 1
        if out and out[-1][2] == declaration and out[-1][1] + 1 == point:
            out[-1] = (out[-1][0], end, declaration)
        else:
            out.append((point, end, declaration))
    return out


class _Declared:
    """The id ranges retirement declarations list, per table, and the sealed rows verification
    finds missing in them: retired, not deleted, as long as each declaration's count holds."""

    def __init__(self, declarations: list[Retirement]) -> None:
        self.declarations = declarations
        self.found: Counter[tuple[int, str]] = Counter()
        ranges: dict[str, list[tuple[int, int, int]]] = {}
        for declaration in declarations:
            for table, entry in (declaration.tables or {}).items():
                for first, last in entry.get("ranges", []):
                    ranges.setdefault(table, []).append((int(first), int(last), declaration.pk))
        self.ranges = {table: disjoint(found) for table, found in ranges.items()}
        self.firsts = {table: [r[0] for r in found] for table, found in self.ranges.items()}

    def retired(self, table: str, row_id: int) -> bool:
        """Whether a declaration lists the missing row; it is counted to that declaration."""
        firsts = self.firsts.get(table)
        if not firsts:
            return False
        position = int(np.searchsorted(firsts, row_id, side="right")) - 1
        if position < 0:
            return False
        first, last, declaration = self.ranges[table][position]
        if not first <= row_id <= last:
            return False
        self.found[declaration, table] += 1
        return True

    def report(self, result: Verification) -> None:
        """One entry a declaration; a count the log does not bear out is a problem.

        The tables checked are those whose rows the log holds (decisions, and each
        record kind's); a declaration listing more, or fewer, of their rows than are
        missing was not what happened.
        """
        checked = {SEALED_TABLES["decision"]._meta.db_table}
        checked |= {kind.model._meta.db_table for kind in records.kinds()}
        for declaration in self.declarations:
            tables = declaration.tables or {}
            counts = {
                table: int(entry.get("rows", 0))
                for table, entry in tables.items()
                if table in checked and entry.get("rows")
            }
            for table, declared in counts.items():
                found = self.found[declaration.pk, table]
                if found != declared:
                    result.problem(
                        UNSEALED,
                        declaration.pk,
                        kind="retirement",
                        label="Retirement declaration",
                        id=declaration.pk,
                        reason=(
                            f"declaration #{declaration.pk} of {declaration.month} retired "
                            f"{declared:,} rows of {table}, but {found:,} are missing from it"
                        ),
                    )
            decisions = counts.get(SEALED_TABLES["decision"]._meta.db_table, 0)
            result.retired.append(
                {
                    "declaration": declaration.pk,
                    "month": declaration.month,
                    "declared_at": canonical_time(declaration.declared_at),
                    "declared_by": declaration.actor_name,
                    "mode": declaration.mode,
                    "rows": {table: int(entry.get("rows", 0)) for table, entry in tables.items()},
                    "summary": (
                        f"{decisions:,} decisions of {declaration.month} retired on "
                        f"{declaration.declared_at:%Y-%m-%d %H:%M} UTC by declaration "
                        f"#{declaration.pk} ({declaration.actor_name or 'unknown'})"
                    ),
                }
            )


def _reconcile_ingestion(
    sealed: _Sealed, result: Verification, ids: Iterable[int] | None = None
) -> None:
    """Every decision must be named by the ingestion event that recorded it, exactly once.

    `decisions.ingested` events list the ids they created as [first, last] runs.
    A decision inserted by hand, even with a valid hash and a fresh time, has no
    such event; one named twice was claimed by a forged event. `ids`: the decisions
    to check, in increasing order (every decision without it). On arrays: a million
    decisions walked one by one in Python took a second and a half.
    """
    runs = []
    events = AuditEvent.objects.filter(action=INGESTED_EVENT).values_list("details", flat=True)
    for details in events.iterator(chunk_size=CHUNK):
        runs += [(first, last) for first, last in (details or {}).get("ids", [])]
    runs.sort()
    if ids is None:
        ids = (
            Decision.objects.order_by("id").values_list("id", flat=True).iterator(chunk_size=CHUNK)
        )
    claimed_twice, unclaimed = unreconciled(runs, np.fromiter(ids, dtype=np.int64))

    def bad(decision_id: int, reason: str) -> None:
        seal_index = sealed.seal_holding(decision_id)
        order = UNSEALED if seal_index is None else seal_index
        result.problem(
            order, decision_id, kind="decision", id=decision_id, seal=seal_index, reason=reason
        )

    for first in claimed_twice:
        bad(first, "two ingestion events claim to have recorded it")
    for decision_id in unclaimed:
        bad(decision_id, "no ingestion event recorded it: it was not written by Attest")


def unreconciled(runs: list[tuple[int, int]], ids: np.ndarray) -> tuple[list[int], list[int]]:
    """(the first id of each run that starts inside what the runs before it cover, among
    the runs starting at or before the last id; the ids no run covers). `runs` sorted,
    `ids` increasing."""
    if not len(ids):
        return [], []
    if not runs:
        return [], ids.tolist()
    firsts = np.array([first for first, _ in runs], dtype=np.int64)
    reach = np.maximum.accumulate(np.array([last for _, last in runs], dtype=np.int64))
    covered_before = np.concatenate(([0], reach[:-1]))
    claimed_twice = firsts[(firsts <= ids[-1]) & (firsts <= covered_before)]
    position = np.searchsorted(firsts, ids, side="right") - 1
    covered = (position >= 0) & (ids <= reach[np.maximum(position, 0)])
    return claimed_twice.tolist(), ids[~covered].tolist()


def read_exported_seal(data: bytes) -> dict[str, Any]:
    """A kept seal (uploaded, or the file `verify_chain --against` reads), or InvalidInput
    saying what is wrong with it; a key given twice is refused (textcheck.loads): readers
    that took the other value would check another root."""
    try:
        document = textcheck.loads(data)
    except ValueError as error:  # undecodable, not JSON, or a key given twice
        raise InvalidInput(f"The seal file is not JSON: {error}.", code="invalid_seal") from error
    if not isinstance(document, dict):
        raise InvalidInput("The seal file must hold one JSON object.", code="invalid_seal")
    return document


def _check_against(
    kept: dict[str, Any], seals: list[Seal], roots: dict[int, str], result: Verification
) -> None:
    """Compare the log with a seal kept outside the database since it was exported.

    A signed tree head (tree_size, root_hash...) must be this log's at that size,
    rebuilt from the leaves; a seal of the former hash chain (index, seal_hash,
    exported before the log was one tree) must be the chain recomputed from them.
    """
    if check_kept_seal(kept) == "tree head":
        _check_against_tree_head(kept, seals, roots, result)
    else:
        _check_against_chain_seal(kept, seals, result)


def check_kept_seal(kept: Any) -> str:
    """Which kind of kept seal this is ("tree head" or "chain seal"), or InvalidInput."""
    if isinstance(kept, dict):
        try:
            if "tree_size" in kept:
                _ = str(kept["root_hash"])
                if 1 <= int(kept["tree_size"]) <= MAX_TREE_SIZE:
                    return "tree head"
            elif "seal_hash" in kept:
                _ = str(kept["seal_hash"])
                if 0 <= int(kept["index"]) <= MAX_TREE_SIZE:  # seals[-1] is not seal -1
                    return "chain seal"
        except (KeyError, TypeError, ValueError, OverflowError):
            pass
    raise InvalidInput(
        "A kept seal is the JSON object GET /api/v1/audit/seals/latest answered (or "
        "`verify_chain --export-seal` wrote): it needs an integer 'tree_size' and its "
        "'root_hash' (seals of the former hash chain: 'index' and 'seal_hash').",
        code="invalid_seal",
    )


def _check_against_tree_head(
    kept: dict[str, Any], seals: list[Seal], roots: dict[int, str], result: Verification
) -> None:
    tree_size, root_hash = int(kept["tree_size"]), str(kept["root_hash"])
    result.checked_against = {"tree_size": tree_size, "root_hash": root_hash}
    by_size = {seal.tree_size: seal for seal in seals}
    seal = by_size.get(tree_size)
    index = seal.index if seal else len(seals)

    def bad(reason: str) -> None:
        result.problem(index, -1, kind="seal", index=index, tree_size=tree_size, reason=reason)

    if "signature" in kept:
        keys = signing.known_keys()
        if signature_problem := signing.seal_signature_problem(kept, keys, "the kept seal"):
            bad(signature_problem)
    if seal is None:
        bad("the kept seal is missing from the log")
    elif roots[tree_size] != root_hash or seal.root_hash != root_hash:
        bad("it differs from the kept copy: the log was rewritten up to here")


def _check_against_chain_seal(
    kept: dict[str, Any], seals: list[Seal], result: Verification
) -> None:
    index, seal_hash = int(kept["index"]), str(kept["seal_hash"])
    result.checked_against = {"index": index, "seal_hash": seal_hash}
    hashes = chain_seal_hashes(seals[: index + 1])
    if index >= len(seals):
        reason = "the kept seal is missing from the log"
        result.problem(index, -1, kind="seal", index=index, reason=reason)
    elif hashes[index] != seal_hash:
        result.problem(
            index,
            -1,
            kind="seal",
            index=index,
            reason="it differs from the kept copy: the log was rewritten up to here",
        )


def chain_seal_hashes(seals: list[Seal]) -> list[str]:
    """The seal_hash each seal had in the former hash chain, recomputed from its leaves.

    Before the log was one tree, a seal held Merkle roots over its own decisions
    and events and was chained to the previous one by hash; seals exported then
    (`"attest_seal": 1`) can still be checked against the log.
    """
    hashes, previous = [], GENESIS
    for seal in seals:
        document = {
            "index": seal.index,
            "sealed_at": canonical_time(seal.sealed_at),
            "previous_hash": previous,
            "decisions": {
                "count": seal.decision_count,
                "last_id": seal.last_decision_id,
                "root": merkle.root(log.split(bytes(seal.decision_leaves))).hex(),
            },
            "events": {
                "count": seal.event_count,
                "last_id": seal.last_event_id,
                "root": merkle.root(log.split(bytes(seal.event_leaves))).hex(),
            },
        }
        previous = sha256_hex(document)
        hashes.append(previous)
    return hashes
