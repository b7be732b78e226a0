"""The log: sealing new decisions, audit events and records into it, proofs, verifying it all.

The log is one RFC 6962 Merkle tree over every sealed record (`decisions/log.py`).
Every minute a seal appends what was recorded since the previous one and signs
the new tree head (tree size, root hash, time) with Ed25519. An inclusion proof
shows a decision is in the tree of a seal; a consistency proof shows a later
seal's tree extends an earlier one's. Verification recomputes every content
hash from the stored fields, rebuilds the tree, checks every signature, and
names the first record or seal that does not match. A seal kept outside the
database lets a later verification prove that nothing up to it was rewritten,
even by someone able to recompute and re-sign everything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction
from django.db.models import BinaryField
from django.db.models.functions import Substr
from django.utils import timezone

from auditapp.accounts import records, roles
from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent, LogRecord, event_document
from auditapp.appendonly import SEALING_LOCK
from auditapp.decisions import log, merkle, seal_keys, signing
from auditapp.decisions.models import INGESTED_EVENT, Decision, Seal
from auditapp.errors import InvalidInput, NotFound
from auditapp.hashing import (
    canonical_bytes,
    canonical_ip,
    canonical_time,
    decision_document,
    sha256_hex,
)
from auditapp.registry.models import ModelVersion
from auditapp.snapshots import one_moment
from explain.schema import parse_schema

GENESIS = "0" * 64  # the "previous hash" of the first seal of the former hash chain
MAX_SEAL_ROWS = 100_000  # decisions (and events) per seal at most
CHUNK = 20_000  # rows fetched per round trip while verifying
MAX_TREE_SIZE = 2**63 - 1  # a 64-bit integer column
_SORTED = orjson.OPT_SORT_KEYS


# --- seals -----------------------------------------------------------------------


def exported_seal(seal: Seal) -> dict[str, Any]:
    """A seal as the API answers it and an auditor keeps it: a signed tree head."""
    return {
        "tree_size": seal.tree_size,
        "root_hash": seal.root_hash,
        "sealed_at": canonical_time(seal.sealed_at),
        "signature": seal.signature,
        "key_id": seal.key_id,
    }


def require_seal_reader(actor: roles.Actor) -> None:
    """Seals, the public key and consistency proofs: for who verifies the log or reads decisions.

    They hold only sizes, hashes and times; whoever may get a decision's
    inclusion proof needs them to check it.
    """
    if not (actor.can(roles.VERIFY_CHAIN) or actor.can(roles.READ_DECISIONS)):
        raise PermissionDenied(
            f"Your role does not allow this ({roles.VERIFY_CHAIN} or {roles.READ_DECISIONS})."
        )


def export_seal(
    actor: roles.Actor, tree_size: int | None = None, *, ip: str | None = None, via: str
) -> dict[str, Any]:
    """One seal (the latest when no size is given) to keep outside; the export is audited."""
    require_seal_reader(actor)
    seal = latest_seal() if tree_size is None else seal_of_size(tree_size)
    if seal is None:
        raise NotFound("There is no seal yet: decisions are sealed every minute.")
    record_event(
        "seal.exported", actor=actor, target=seal, ip=ip, via=via, tree_size=seal.tree_size
    )
    return exported_seal(seal)


def public_key(actor: roles.Actor) -> dict[str, Any]:
    require_seal_reader(actor)
    return seal_keys.public_keys_document()


def latest_seal() -> Seal | None:
    return Seal.objects.defer(*_BODY).order_by("-index").first()


def seal_of_size(tree_size: int) -> Seal:
    seal = Seal.objects.defer(*_BODY).filter(tree_size=tree_size).first()
    if seal is None:
        raise NotFound(
            f"No seal has tree size {tree_size}: GET /api/v1/audit/seals lists them.",
            code="no_such_seal",
        )
    return seal


_BODY = (*(f"{kind}_{part}" for kind in log.NAMES for part in ("ids", "leaves")), "nodes")


def seals_page(
    actor: roles.Actor, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Seals newest first, `limit` a page; the cursor is the last tree size shown."""
    require_seal_reader(actor)
    seals = Seal.objects.defer(*_BODY, "frontier").order_by("-tree_size")
    if cursor:
        seals = seals.filter(tree_size__lt=_decode_cursor(cursor))
    rows = list(seals[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return [exported_seal(s) for s in rows], _encode_cursor(rows[-1].tree_size) if more else None


def _encode_cursor(tree_size: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([tree_size]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        (tree_size,) = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not 1 <= int(tree_size) <= MAX_TREE_SIZE:
            raise ValueError(tree_size)
        return int(tree_size)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(
            "cursor is not valid; use the `next` value of a previous page."
        ) from None


def parse_tree_size(raw: Any, name: str = "tree_size") -> int:
    """A tree size from a request: a positive integer, or InvalidInput naming the parameter."""
    try:
        size = int(raw)
    except (TypeError, ValueError, OverflowError):
        size = 0
    if not 1 <= size <= MAX_TREE_SIZE or str(raw).strip() != str(size):
        raise InvalidInput(
            f"{name} must be a positive integer: the tree size of a seal.",
            details={name: [f"not a tree size: {raw!r}"]},
        )
    return size


# --- sealing -------------------------------------------------------------------------


def seal_new_records(max_rows: int = MAX_SEAL_ROWS) -> list[Seal]:
    """Seal every decision, audit event and record written since the last seal.

    Called by a periodic task and by `manage.py seal_records`. Two sealers at
    once cannot fork the log: index and tree size are unique, and the loser stops.
    """
    horizon = _horizon()
    made: list[Seal] = []
    while True:
        try:
            seal = _seal_next(horizon, max_rows)
        except IntegrityError:
            break  # another sealer took this index; it carries on from here
        if seal is None:
            break
        made.append(seal)
    return made


SEALED_TABLES = {"decision": Decision, "event": AuditEvent, "record": LogRecord}


def _horizon() -> dict[str, int]:
    """Per kind, the newest id that can be sealed: every transaction that drew a smaller one ended.

    Writers hold the shared side of the sealing lock while they insert (see
    `appendonly.hold_insert_order`), so taking the exclusive side waits them out.
    """
    horizon = {}
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEALING_LOCK])
        for kind in log.NAMES:
            cursor.execute(f"SELECT max(id) FROM {SEALED_TABLES[kind]._meta.db_table}")
            horizon[kind] = cursor.fetchone()[0] or 0
    return horizon


@transaction.atomic
def _seal_next(horizon: dict[str, int], max_rows: int) -> Seal | None:
    previous = latest_seal()
    first_leaf = previous.tree_size if previous else 0
    fields: dict[str, Any] = {}
    leaves: list[bytes] = []
    for kind in log.NAMES:
        after = (getattr(previous, f"last_{kind}_id") or 0) if previous else 0
        rows = list(
            SEALED_TABLES[kind]
            .objects.filter(id__gt=after, id__lte=horizon[kind])
            .order_by("id")
            .values_list("id", "content_hash")[:max_rows]
        )
        ids, packed = _pack(rows)
        fields.update(
            {
                f"{kind}_count": len(rows),
                f"last_{kind}_id": rows[-1][0] if rows else (after or None),
                f"{kind}_ids": ids,
                f"{kind}_leaves": packed,
            }
        )
        leaves += log.leaf_hashes(kind, packed)
    if not leaves:
        return None
    frontier, nodes, root_hash = log.grow(
        bytes(previous.frontier) if previous else b"", first_leaf, leaves
    )
    seal = Seal(
        index=previous.index + 1 if previous else 0,
        sealed_at=timezone.now(),
        first_leaf=first_leaf,
        tree_size=first_leaf + len(leaves),
        root_hash=root_hash,
        frontier=frontier,
        nodes=nodes,
        **fields,
    )
    seal.signature, seal.key_id = signing.sign(
        seal.tree_size, seal.root_hash, canonical_time(seal.sealed_at)
    )
    seal.save(force_insert=True)
    return seal


def _pack(rows: list[tuple[int, str]]) -> tuple[bytes, bytes]:
    ids = np.fromiter((row[0] for row in rows), dtype="<i8", count=len(rows))
    return ids.tobytes(), b"".join(bytes.fromhex(row[1]) for row in rows)


# --- proofs ----------------------------------------------------------------------------


# What an inclusion proof calls each kind of record it can prove (its `<kind>_id`).
RECORD_NAMES = {"decision": "Decision", "event": "Audit event"}


def seal_of(decision: Decision, *, with_ids: bool = False) -> Seal | None:
    """The seal that appended the decision, None while it is not sealed yet."""
    return _seal_of("decision", decision.pk, with_ids=with_ids)


def _seal_of(kind: str, record_id: int, *, with_ids: bool = False) -> Seal | None:
    """The seal that appended record `record_id` of a kind, None while it is not sealed yet."""
    seals = Seal.objects.filter(
        **{f"last_{kind}_id__gte": record_id, f"{kind}_count__gt": 0}
    ).defer(*(f for f in _BODY if not (with_ids and f == f"{kind}_ids")))
    return seals.order_by("index").first()


def decision_leaf(decision: Decision) -> tuple[Seal, int, str]:
    """(the seal that appended it, its leaf index in the log, the content hash sealed)."""
    return record_leaf("decision", decision.pk)


def record_leaf(kind: str, record_id: int) -> tuple[Seal, int, str]:
    """Where a record of a kind is in the log: (its seal, its leaf index, the content hash sealed).

    A seal appends each kind's records in id order after the kinds before it
    (log.KINDS), so the leaf index is the seal's first leaf, plus the counts of
    the kinds before, plus the record's position among its kind's ids.
    """
    name = RECORD_NAMES.get(kind, kind)
    seal = _seal_of(kind, record_id, with_ids=True)
    if seal is None:
        raise NotFound(
            f"{name} {record_id} is not sealed yet; seals are made every minute.",
            code="not_sealed",
        )
    ids = np.frombuffer(bytes(getattr(seal, f"{kind}_ids")), dtype="<i8")
    position = int(np.searchsorted(ids, record_id))
    if position >= len(ids) or ids[position] != record_id:
        raise NotFound(f"{name} {record_id} is missing from seal {seal.index}.")
    before = 0
    for other, _, count_field, _ in log.KINDS:
        if other == kind:
            break
        before += getattr(seal, count_field)
    sealed = Substr(f"{kind}_leaves", 32 * position + 1, 32, output_field=BinaryField())
    content_hash = Seal.objects.filter(pk=seal.pk).values_list(sealed, flat=True).get()
    return seal, seal.first_leaf + before + position, bytes(content_hash).hex()


def inclusion_proof(record: Decision | AuditEvent, tree_size: int | None = None) -> dict[str, Any]:
    """The RFC 6962 audit path from a decision's or audit event's leaf to a seal's root.

    The seal is the latest unless `tree_size` names another one that holds the
    record: a proof against a seal kept long ago is as good as against today's.
    """
    kind = "event" if isinstance(record, AuditEvent) else "decision"
    sealed_in, leaf_index, content_hash = record_leaf(kind, record.pk)
    seal = latest_seal() if tree_size is None else seal_of_size(tree_size)
    if seal.tree_size <= leaf_index:
        raise InvalidInput(
            f"{RECORD_NAMES[kind]} {record.pk} is leaf {leaf_index}, first sealed in the tree "
            f"of size {sealed_in.tree_size}: tree_size must be at least that.",
            details={"tree_size": [f"at least {sealed_in.tree_size}"]},
        )
    path = log.inclusion_path(leaf_index, seal.tree_size)
    return {
        f"{kind}_id": record.pk,
        "content_hash": content_hash,
        "leaf_index": leaf_index,
        "tree_size": seal.tree_size,
        "root_hash": seal.root_hash,
        "audit_path": [node.hex() for node in path],
    }


def inclusion_holds(proof: dict[str, Any]) -> bool:
    """Whether an inclusion proof leads to its root (RFC 9162 verification)."""
    kind = next((kind for kind in log.PREFIX if f"{kind}_id" in proof), "decision")
    return merkle.verify_inclusion(
        log.leaf_data(kind, bytes.fromhex(proof["content_hash"])),
        proof["leaf_index"],
        proof["tree_size"],
        [bytes.fromhex(node) for node in proof["audit_path"]],
        bytes.fromhex(proof["root_hash"]),
    )


def consistency_proof(actor: roles.Actor, first: int, second: int | None) -> dict[str, Any]:
    """The RFC 6962 proof that the tree of seal `second` (default: the latest) extends `first`'s."""
    require_seal_reader(actor)
    old = seal_of_size(first)
    new = latest_seal() if second is None else seal_of_size(second)
    if new.tree_size < old.tree_size:
        raise InvalidInput(
            "first must not be larger than second: a later tree extends an earlier one.",
            details={"first": [f"larger than second ({new.tree_size})"]},
        )
    path = log.consistency_path(old.tree_size, new.tree_size)
    return {
        "first": old.tree_size,
        "second": new.tree_size,
        "first_root": old.root_hash,
        "second_root": new.root_hash,
        "consistency_proof": [node.hex() for node in path],
    }


# --- verification ------------------------------------------------------------------


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
    _problems: list[tuple[tuple[int, int, int], dict]] = field(default_factory=list, repr=False)

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
        }

    def problems(self) -> list[dict]:
        """Everything found, in log order (first_bad is the first of them)."""
        return [what for _, what in sorted(self._problems, key=lambda item: item[0])]

    def problem(self, seal_index: int, order: int, **what: Any) -> None:
        """Note a mismatch; the first in log order is reported: by seal, then within a seal
        its own problems, its decisions, its events, its records (`order`: the row's id)."""
        rank = {"seal": -1, "decision": 0, "event": 1}.get(what.get("kind"), 2)
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


def note_verified(actor: roles.Actor, result: Verification, *, ip: str | None, via: str, **more):
    record_event(
        "chain.verified",
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
    rows = {"decision": _decision_hashes(processes), "event": _event_hashes(), "record": _records()}
    counts = {
        kind: _check_rows(kind, rows[kind], sealed[kind], clock, result, progress)
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
            )
        _reconcile_ingestion(sealed["decision"], result)
    if against is not None:
        _check_against(against, seals, roots, result)
    if seals:
        result.latest_seal = exported_seal(seals[-1])
    if result._problems:
        result.ok = False
        result.first_bad = min(result._problems, key=lambda item: item[0])[1]
    return result


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

    def problem(
        self, at: datetime, previous: datetime | None, seal_index: int | None
    ) -> str | None:
        slack = self.tolerance
        if previous is not None and at < previous - slack:
            return (
                f"it is dated {canonical_time(at)}, before the row written before it "
                f"({canonical_time(previous)}): backdated"
            )
        after = seal_index - 1 if seal_index is not None else len(self.sealed_at) - 1
        if after >= 0 and at < self.sealed_at[after] - slack:
            return (
                f"it is dated {canonical_time(at)}, before seal {after} "
                f"({canonical_time(self.sealed_at[after])}) that it follows: backdated"
            )
        if seal_index is not None and at > self.sealed_at[seal_index] + slack:
            return f"it is dated {canonical_time(at)}, after seal {seal_index} that holds it"
        return None


def _check_rows(
    kind: str,
    rows: Iterator[list[tuple[int, bytes, str, str]]],
    sealed: _Sealed,
    clock: _Clock,
    result: Verification,
    progress: Callable[[str, int], None] | None,
) -> int:
    """Walk rows in id order beside the sealed ids: note deleted, inserted, changed, backdated."""
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
                _missing(kind, sealed, pointer, result)
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
        if progress:
            progress(kind, count)
    while pointer < total:
        _missing(kind, sealed, pointer, result)
        pointer += 1
    setattr(result, f"unsealed_{kind}s", unsealed)
    return count


def _missing(kind: str, sealed: _Sealed, pointer: int, result: Verification) -> None:
    row_id, seal_index = int(sealed.ids[pointer]), int(sealed.seal_of[pointer])
    result.problem(
        seal_index, row_id, kind=kind, id=row_id, seal=seal_index, reason="it was deleted"
    )


def _recorded() -> tuple[dict[str, dict[int, tuple[int, str, datetime | None, int]]], dict]:
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
    for object_id, (record_id, *_) in recorded.items():
        bad(record_id, object_id, "it was deleted: its record remains")
    for object_id, reason in record_kind.consistency() if record_kind.consistency else ():
        bad(None, object_id, reason)
    return count


def _reconcile_ingestion(sealed: _Sealed, result: Verification) -> None:
    """Every decision must be named by the ingestion event that recorded it, exactly once.

    `decisions.ingested` events list the ids they created as [first, last] runs.
    A decision inserted by hand, even with a valid hash and a fresh time, has no
    such event; one named twice was claimed by a forged event.
    """
    runs = []
    events = AuditEvent.objects.filter(action=INGESTED_EVENT).values_list("details", flat=True)
    for details in events.iterator(chunk_size=CHUNK):
        runs += [(first, last) for first, last in (details or {}).get("ids", [])]
    runs.sort()
    ids = Decision.objects.order_by("id").values_list("id", flat=True).iterator(chunk_size=CHUNK)

    def bad(decision_id: int, reason: str) -> None:
        seal_index = sealed.seal_holding(decision_id)
        order = UNSEALED if seal_index is None else seal_index
        result.problem(
            order, decision_id, kind="decision", id=decision_id, seal=seal_index, reason=reason
        )

    position, covered_until = 0, 0
    for decision_id in ids:
        while position < len(runs) and runs[position][0] <= decision_id:
            first, last = runs[position]
            if first <= covered_until:
                bad(first, "two ingestion events claim to have recorded it")
            covered_until = max(covered_until, last)
            position += 1
        if decision_id > covered_until:
            bad(decision_id, "no ingestion event recorded it: it was not written by Attest")


def read_exported_seal(data: bytes) -> dict[str, Any]:
    """An uploaded exported seal, or InvalidInput saying what is wrong with it."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
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


def _check_against_chain_seal(kept: dict[str, Any], seals: list[Seal], result: Verification):
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


# --- recomputing content hashes from the stored fields ----------------------------


DECISION_COLUMNS = (
    "id",
    "model_version_id",
    "request_id",
    "subject_ref",
    "inputs",
    "prediction",
    "score",
    "predicted_at",
    "recorded_at",
    "source",
    "metadata",
    "salt",
    "content_hash",
)
RANGE = 50_000  # decision ids per task when hashing in processes


def _decision_columns() -> list[str]:
    json_columns = {"inputs", "prediction", "metadata"}
    time_columns = {"predicted_at", "recorded_at"}
    return [
        _json(c) if c in json_columns else _time(c) if c in time_columns else c
        for c in DECISION_COLUMNS
    ]


def _decision_hashes(processes: bool) -> Iterator[list[tuple[int, bytes, str, str]]]:
    """(id, content hash recomputed from the stored fields, stored hash), in chunks by id."""
    versions = {
        pk: (name, version, sha, parse_schema(schema).sensitive_names)
        for pk, name, version, sha, schema in ModelVersion.objects.values_list(
            "pk", "registered_model__name", "version", "artifact_sha256", "schema"
        )
    }
    table = Decision._meta.db_table
    if processes and _can_use_processes():
        yield from _hashed_in_processes(table, versions)
        return
    for chunk in _chunks(table, _decision_columns()):
        yield hash_decision_rows(chunk, versions)


def hash_decision_rows(rows: list[tuple], versions: dict) -> list[tuple[int, bytes, str, str]]:
    """Each row's content hash, recomputed from its stored columns (DECISION_COLUMNS).

    The sensitive features are the version's schema's: a schema edited to unmask
    one no longer reproduces the hashes of the decisions it recorded.
    """
    sha256, dumps, loads = hashlib.sha256, orjson.dumps, orjson.loads
    out = []
    for pk, version_id, request_id, subject, inputs, prediction, score, *rest in rows:
        predicted_at, recorded_at, source, metadata, salt, stored = rest
        model, version, artifact, sensitive = versions[version_id]
        fields = {
            "artifact_sha256": artifact,
            "inputs": loads(inputs),
            "metadata": loads(metadata),
            "model": model,
            "predicted_at": predicted_at,
            "prediction": loads(prediction),
            "recorded_at": recorded_at,
            "request_id": request_id,
            "score": score,
            "source": source,
            "subject_ref": subject,
            "version": version,
        }
        document = decision_document(fields, sensitive, None if salt is None else bytes(salt))
        out.append((pk, sha256(dumps(document, option=_SORTED)).digest(), stored, recorded_at))
    return out


def _can_use_processes() -> bool:
    """Hash in worker processes: on PostgreSQL, with committed rows, on more than one core.

    Inside a transaction other connections cannot see its rows; a daemonic
    process (a multiprocessing pool worker) may not start children.
    """
    return (
        connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and not multiprocessing.current_process().daemon
        and (os.cpu_count() or 1) > 1
    )


def _hashed_in_processes(table: str, versions: dict) -> Iterator[list[tuple[int, bytes, str, str]]]:
    """The decisions hashed by one process per core, RANGE ids a task, returned in id order.

    Hashing is Python's work under one lock; a million decisions take half the
    time on two cores. Each process reads its ids on a connection of its own.
    """
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT min(id), max(id) FROM {table}")
        low, high = cursor.fetchone()
    if low is None:
        return
    sql = (
        f"SELECT {', '.join(_decision_columns())} FROM {table} "
        "WHERE id >= %s AND id < %s ORDER BY id"
    )
    params = {k: v for k, v in connection.get_connection_params().items() if k != "context"}
    tasks = [(params, sql, start, start + RANGE, versions) for start in range(low, high + 1, RANGE)]
    processes = min(len(tasks), os.cpu_count() or 2, 4)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        yield from pool.imap(_hash_range, tasks)


def _hash_range(task) -> list[tuple[int, bytes, str, str]]:
    """In a worker process: read one id range on a new connection and hash it."""
    import psycopg

    params, sql, start, end, versions = task
    with psycopg.connect(**params) as conn, conn.cursor() as cursor:
        cursor.execute(sql, (start, end))
        return hash_decision_rows(cursor.fetchall(), versions)


def _event_hashes() -> Iterator[list[tuple[int, bytes, str, str]]]:
    table = AuditEvent._meta.db_table
    ip = "host(ip)" if connection.vendor == "postgresql" else "ip"
    columns = [
        "id",
        _time("at"),
        "actor_id",
        "actor_name",
        "action",
        "object_type",
        "object_id",
        ip,
        _json("details"),
        _json("sensitive_details"),
        "salt",
        "content_hash",
    ]
    for chunk in _chunks(table, columns):
        out = []
        for pk, at, actor_id, actor_name, action, object_type, object_id, ip_text, *rest in chunk:
            details, sensitive, salt, stored = rest
            fields = {
                "at": at,
                "actor_id": actor_id,
                "actor_name": actor_name,
                "action": action,
                "object_type": object_type,
                "object_id": object_id,
                "ip": canonical_ip(ip_text),
                "details": orjson.loads(details),
            }
            document = event_document(
                fields, orjson.loads(sensitive), None if salt is None else bytes(salt)
            )
            out.append((pk, hashlib.sha256(canonical_bytes(document)).digest(), stored, at))
        yield out


def _records() -> Iterator[list[tuple[int, bytes, str, str]]]:
    """The log's records (LogRecord rows): what was sealed is their stored hash itself.

    Whether each still stands for its row is `_check_record_rows`'s question.
    """
    columns = ["id", "content_hash", _time("recorded_at")]
    for chunk in _chunks(LogRecord._meta.db_table, columns):
        yield [(pk, bytes.fromhex(stored), stored, at) for pk, stored, at in chunk]


def _json(column: str) -> str:
    """A JSON column as its text (SQLite keeps the text already)."""
    return f"({column})::text" if connection.vendor == "postgresql" else column


def _time(column: str) -> str:
    """A timestamp as the canonical UTC text the hashes use: 2026-11-20T10:00:00.000000+00:00."""
    if connection.vendor == "postgresql":
        return f"to_char(({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
    # SQLite holds naive UTC as 'YYYY-MM-DD HH:MM:SS[.ffffff]'.
    return f"(replace(substr({column} || '.000000', 1, 26), ' ', 'T') || '+00:00')"


def _chunks(table: str, columns: list[str]) -> Iterator[list[tuple]]:
    """Rows in id order, CHUNK at a time.

    On PostgreSQL, outside a transaction, the next chunk is fetched on a second
    connection while this thread hashes the last one, so the server's work and
    the hashing overlap (audit events; decisions are hashed in processes).
    Inside a transaction (tests, or a caller's atomic block) another connection
    could not see uncommitted rows, so the rows are read here.
    """
    sql = f"SELECT {', '.join(columns)} FROM {table} ORDER BY id"
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        yield from _prefetched(sql)
    else:
        yield from _fetched(sql)


def _fetched(sql: str) -> Iterator[list[tuple]]:
    """The rows of `sql` from a server-side cursor on this thread's connection."""
    with transaction.atomic():
        cursor = connection.chunked_cursor()
        try:
            cursor.execute(sql)
            while chunk := cursor.fetchmany(CHUNK):
                yield chunk
        finally:
            cursor.close()


def _prefetched(sql: str, depth: int = 2) -> Iterator[list[tuple]]:
    """_fetched on a thread of its own (its own connection), at most `depth` chunks ahead."""
    chunks: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for chunk in _fetched(sql):
                if not hand_over(chunk):
                    return
            hand_over(_DONE)
        except BaseException as error:  # raised again in the reading thread
            hand_over(error)
        finally:
            connection.close()  # this thread's own connection

    fetcher = threading.Thread(target=fetch, name="verify-fetch", daemon=True)
    fetcher.start()
    try:
        while (item := chunks.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        fetcher.join()


_DONE = object()
