"""The hash chain: sealing new decisions and audit events into blocks, and verifying it all.

A seal holds two RFC 6962 Merkle roots, over the content hashes of the
decisions and of the audit events recorded since the previous seal (in id
order), and the previous seal's hash. Verification recomputes every content
hash from the stored fields, every root and every link, and names the first
record or seal that does not match. An exported seal, kept outside the
database, lets a later verification prove that nothing up to it was rewritten,
even by someone able to recompute the whole chain.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent, event_document
from auditapp.appendonly import SEALING_LOCK
from auditapp.decisions import merkle
from auditapp.decisions.hashing import (
    canonical_bytes,
    canonical_ip,
    canonical_time,
    decision_document,
    sha256_hex,
)
from auditapp.decisions.models import Decision, Seal
from auditapp.errors import InvalidInput, NotFound
from auditapp.registry.models import ModelVersion
from auditapp.registry.schema import parse_schema

GENESIS = "0" * 64  # the "previous hash" of the first seal
MAX_SEAL_ROWS = 100_000  # decisions (and events) per seal at most
CHUNK = 20_000  # rows fetched per round trip while verifying
_SORTED = orjson.OPT_SORT_KEYS


# --- sealing -------------------------------------------------------------------


def seal_document(seal: Seal) -> dict[str, Any]:
    """What a seal's hash covers, and what an auditor keeps when exporting it."""
    return {
        "index": seal.index,
        "sealed_at": canonical_time(seal.sealed_at),
        "previous_hash": seal.previous_hash,
        "decisions": {
            "count": seal.decision_count,
            "last_id": seal.last_decision_id,
            "root": seal.decisions_root,
        },
        "events": {
            "count": seal.event_count,
            "last_id": seal.last_event_id,
            "root": seal.events_root,
        },
    }


def exported_seal(seal: Seal) -> dict[str, Any]:
    """A seal as a small JSON document to keep outside the database."""
    return {
        "attest_seal": 1,
        **seal_document(seal),
        "seal_hash": seal.seal_hash,
        "hashing": "sha256 over canonical JSON (sorted keys, no spaces) of the other fields; "
        "roots are RFC 6962 Merkle tree hashes over content hashes as 32-byte leaves",
    }


def export_latest_seal(actor: roles.Actor, *, ip: str | None = None, via: str) -> dict[str, Any]:
    """The latest seal for someone allowed to verify the chain; the export is audited."""
    actor.require(roles.VERIFY_CHAIN)
    seal = latest_seal()
    if seal is None:
        raise NotFound("There is no seal yet: decisions are sealed every minute.")
    record_event("seal.exported", actor=actor, target=seal, ip=ip, via=via, index=seal.index)
    return exported_seal(seal)


def latest_seal() -> Seal | None:
    return Seal.objects.defer(*_BODY).order_by("-index").first()


_BODY = ("decision_ids", "decision_leaves", "event_ids", "event_leaves")


def seal_new_records(max_rows: int = MAX_SEAL_ROWS) -> list[Seal]:
    """Seal every decision and audit event recorded since the last seal.

    Called by a periodic task and by `manage.py seal_records`. Two sealers at
    once cannot fork the chain: the seal index is unique, and the loser stops.
    """
    last_decision, last_event = _horizon()
    made: list[Seal] = []
    while True:
        try:
            seal = _seal_next(last_decision, last_event, max_rows)
        except IntegrityError:
            break  # another sealer took this index; it carries on from here
        if seal is None:
            break
        made.append(seal)
    return made


def _horizon() -> tuple[int, int]:
    """The newest ids that can be sealed: every transaction that drew a smaller id has ended.

    Writers hold the shared side of the sealing lock while they insert (see
    `appendonly.hold_insert_order`), so taking the exclusive side waits them out.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEALING_LOCK])
        cursor.execute(f"SELECT max(id) FROM {Decision._meta.db_table}")
        last_decision = cursor.fetchone()[0] or 0
        cursor.execute(f"SELECT max(id) FROM {AuditEvent._meta.db_table}")
        last_event = cursor.fetchone()[0] or 0
    return last_decision, last_event


@transaction.atomic
def _seal_next(horizon_decision: int, horizon_event: int, max_rows: int) -> Seal | None:
    previous = latest_seal()
    after_decision = (previous.last_decision_id or 0) if previous else 0
    after_event = (previous.last_event_id or 0) if previous else 0
    decisions = list(
        Decision.objects.filter(id__gt=after_decision, id__lte=horizon_decision)
        .order_by("id")
        .values_list("id", "content_hash")[:max_rows]
    )
    events = list(
        AuditEvent.objects.filter(id__gt=after_event, id__lte=horizon_event)
        .order_by("id")
        .values_list("id", "content_hash")[:max_rows]
    )
    if not decisions and not events:
        return None
    decision_ids, decision_leaves = _pack(decisions)
    event_ids, event_leaves = _pack(events)
    seal = Seal(
        index=previous.index + 1 if previous else 0,
        sealed_at=timezone.now(),
        previous_hash=previous.seal_hash if previous else GENESIS,
        decision_count=len(decisions),
        last_decision_id=decisions[-1][0] if decisions else (after_decision or None),
        decisions_root=_root(decision_leaves),
        event_count=len(events),
        last_event_id=events[-1][0] if events else (after_event or None),
        events_root=_root(event_leaves),
        decision_ids=decision_ids,
        decision_leaves=decision_leaves,
        event_ids=event_ids,
        event_leaves=event_leaves,
    )
    seal.seal_hash = sha256_hex(seal_document(seal))
    seal.save(force_insert=True)
    return seal


def _pack(rows: list[tuple[int, str]]) -> tuple[bytes, bytes]:
    ids = np.fromiter((row[0] for row in rows), dtype="<i8", count=len(rows))
    return ids.tobytes(), b"".join(bytes.fromhex(row[1]) for row in rows)


def _leaves(packed: bytes) -> list[bytes]:
    return [packed[i : i + 32] for i in range(0, len(packed), 32)]


def _root(packed_leaves: bytes) -> str:
    return merkle.root(_leaves(packed_leaves)).hex()


# --- inclusion proofs ------------------------------------------------------------


def seal_of(decision: Decision, *, with_body: bool = False) -> Seal | None:
    """The seal covering the decision, None while it is not sealed yet."""
    seals = Seal.objects.filter(last_decision_id__gte=decision.pk, decision_count__gt=0)
    if not with_body:
        seals = seals.defer(*_BODY)
    return seals.order_by("index").first()


def inclusion_proof(decision: Decision) -> dict[str, Any]:
    """The RFC 6962 audit path proving the decision is in its seal's Merkle tree."""
    seal = seal_of(decision, with_body=True)
    base = {"decision_id": decision.pk, "content_hash": decision.content_hash}
    if seal is None:
        return {**base, "sealed": False, "note": "Not sealed yet; seals are made every minute."}
    ids = np.frombuffer(bytes(seal.decision_ids), dtype="<i8")
    position = int(np.searchsorted(ids, decision.pk))
    if position >= len(ids) or ids[position] != decision.pk:
        raise NotFound(f"Decision {decision.pk} is missing from seal {seal.index}.")
    leaves = _leaves(bytes(seal.decision_leaves))
    path = merkle.inclusion_proof(leaves, position)
    root = bytes.fromhex(seal.decisions_root)
    return {
        **base,
        "sealed": True,
        "seal": {"index": seal.index, "seal_hash": seal.seal_hash, **seal_document(seal)},
        "leaf_index": position,
        "tree_size": len(leaves),
        "audit_path": [node.hex() for node in path],
        "verified": merkle.verify_inclusion(
            bytes.fromhex(decision.content_hash), position, len(leaves), path, root
        ),
        "algorithm": "RFC 6962 Merkle audit path; leaf data = the content hash as 32 bytes",
    }


# --- verification ------------------------------------------------------------------


@dataclass
class Verification:
    ok: bool = True
    decisions: int = 0
    events: int = 0
    seals: int = 0
    unsealed_decisions: int = 0
    unsealed_events: int = 0
    first_bad: dict[str, Any] | None = None
    latest_seal: dict[str, Any] | None = None
    checked_against: dict[str, Any] | None = None
    _problems: list[tuple[tuple[int, int], dict]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "decisions": self.decisions,
            "events": self.events,
            "seals": self.seals,
            "unsealed_decisions": self.unsealed_decisions,
            "unsealed_events": self.unsealed_events,
            "first_bad": self.first_bad,
            "latest_seal": self.latest_seal,
            "checked_against": self.checked_against,
        }

    def problem(self, seal_index: int, order: int, **what: Any) -> None:
        """Note a mismatch; the first in chain order (seal, then its rows) is reported."""
        self._problems.append(((seal_index, order), what))


def verify_as(
    actor: roles.Actor,
    *,
    against: dict[str, Any] | None = None,
    ip: str | None = None,
    via: str = "api",
    progress: Callable[[str, int], None] | None = None,
) -> Verification:
    """Verify for someone allowed to; the verification and its result are audit events."""
    actor.require(roles.VERIFY_CHAIN)
    result = verify_chain(against=against, progress=progress)
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
    )
    return result


def verify_chain(
    against: dict[str, Any] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> Verification:
    """Recompute every content hash, root and link; name the first record that does not match."""
    result = Verification()
    seals = list(Seal.objects.order_by("index"))
    result.seals = len(seals)
    sealed = {
        "decision": _check_seals(seals, result, "decision"),
        "event": _check_seals(seals, result, "event"),
    }
    result.decisions = _check_rows(
        "decision", _decision_hashes(), sealed["decision"], result, progress
    )
    result.events = _check_rows("event", _event_hashes(), sealed["event"], result, progress)
    if against is not None:
        _check_against(against, seals, result)
    if seals:
        result.latest_seal = exported_seal(seals[-1])
    if result._problems:
        result.ok = False
        result.first_bad = min(result._problems, key=lambda item: item[0])[1]
    return result


@dataclass
class _Sealed:
    """The ids and leaves of one kind of record over the whole chain, and their seals."""

    ids: np.ndarray
    leaves: bytes
    seal_of: np.ndarray  # seal index per position


def _check_seals(seals: list[Seal], result: Verification, kind: str) -> _Sealed:
    ids_parts, leaf_parts, seal_parts = [], [], []
    previous_hash, last_id = GENESIS, 0
    for position, seal in enumerate(seals):
        order = -1  # a seal's own problems come before those of its rows
        ids = np.frombuffer(bytes(getattr(seal, f"{kind}_ids")), dtype="<i8")
        leaves = bytes(getattr(seal, f"{kind}_leaves"))
        count, seal_last = getattr(seal, f"{kind}_count"), getattr(seal, f"last_{kind}_id")
        if kind == "decision":  # the seal's own fields are checked once
            if seal.index != position:
                result.problem(position, order, kind="seal", index=position, reason="missing")
            if seal.previous_hash != previous_hash:
                result.problem(
                    seal.index,
                    order,
                    kind="seal",
                    index=seal.index,
                    reason="its previous_hash does not match the seal before it",
                )
            if sha256_hex(seal_document(seal)) != seal.seal_hash:
                result.problem(
                    seal.index,
                    order,
                    kind="seal",
                    index=seal.index,
                    reason="its fields do not match its seal_hash",
                )
        stored_root = seal.decisions_root if kind == "decision" else seal.events_root
        if len(ids) != count or len(leaves) != 32 * count or _root(leaves) != stored_root:
            result.problem(
                seal.index,
                order,
                kind="seal",
                index=seal.index,
                reason=f"its {kind} leaves do not match its {kind}s root",
            )
        expected_last = int(ids[-1]) if count else (last_id or None)
        increasing = bool(np.all(np.diff(ids) > 0)) and (not count or ids[0] > last_id)
        if seal_last != expected_last or not increasing:
            reason = f"its {kind} range is wrong"
            result.problem(seal.index, order, kind="seal", index=seal.index, reason=reason)
        previous_hash, last_id = seal.seal_hash, max(last_id, seal_last or 0)
        ids_parts.append(ids)
        leaf_parts.append(leaves)
        seal_parts.append(np.full(len(ids), seal.index, dtype="<i8"))
    if not ids_parts:
        empty = np.zeros(0, dtype="<i8")
        return _Sealed(empty, b"", empty)
    return _Sealed(np.concatenate(ids_parts), b"".join(leaf_parts), np.concatenate(seal_parts))


def _check_rows(
    kind: str,
    rows: Iterator[list[tuple[int, bytes, str]]],
    sealed: _Sealed,
    result: Verification,
    progress: Callable[[str, int], None] | None,
) -> int:
    """Walk the rows in id order beside the sealed ids; note deleted, inserted and changed rows."""
    count, pointer, total = 0, 0, len(sealed.ids)
    last_sealed = int(sealed.ids[-1]) if total else 0
    unsealed = 0
    sealed_ids = sealed.ids.tolist()
    leaves = sealed.leaves
    for chunk in rows:
        for row_id, recomputed, stored in chunk:
            while pointer < total and sealed_ids[pointer] < row_id:
                _missing(kind, sealed, pointer, result)
                pointer += 1
            if pointer < total and sealed_ids[pointer] == row_id:
                seal_index = int(sealed.seal_of[pointer])
                if recomputed != leaves[32 * pointer : 32 * pointer + 32]:
                    result.problem(
                        seal_index,
                        row_id,
                        kind=kind,
                        id=row_id,
                        seal=seal_index,
                        reason="its stored fields do not match the content hash it was sealed with",
                    )
                elif recomputed.hex() != stored:
                    result.problem(
                        seal_index,
                        row_id,
                        kind=kind,
                        id=row_id,
                        seal=seal_index,
                        reason="its content_hash column was changed",
                    )
                pointer += 1
            elif row_id <= last_sealed:
                seal_index = int(sealed.seal_of[min(pointer, total - 1)])
                result.problem(
                    seal_index,
                    row_id,
                    kind=kind,
                    id=row_id,
                    seal=seal_index,
                    reason="it was inserted inside a sealed range",
                )
            else:
                unsealed += 1
                if recomputed.hex() != stored:
                    result.problem(
                        1 << 62,
                        row_id,
                        kind=kind,
                        id=row_id,
                        seal=None,
                        reason="its stored fields do not match its content hash (not sealed yet)",
                    )
        count += len(chunk)
        if progress:
            progress(kind, count)
    while pointer < total:
        _missing(kind, sealed, pointer, result)
        pointer += 1
    if kind == "decision":
        result.unsealed_decisions = unsealed
    else:
        result.unsealed_events = unsealed
    return count


def _missing(kind: str, sealed: _Sealed, pointer: int, result: Verification) -> None:
    row_id, seal_index = int(sealed.ids[pointer]), int(sealed.seal_of[pointer])
    result.problem(
        seal_index, row_id, kind=kind, id=row_id, seal=seal_index, reason="it was deleted"
    )


def read_exported_seal(data: bytes) -> dict[str, Any]:
    """An uploaded exported seal, or InvalidInput saying what is wrong with it."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"The seal file is not JSON: {error}.", code="invalid_seal") from error
    if not isinstance(document, dict):
        raise InvalidInput("The seal file must hold one JSON object.", code="invalid_seal")
    return document


def _check_against(exported: dict[str, Any], seals: list[Seal], result: Verification) -> None:
    """Compare the chain with a seal exported earlier and kept outside the database."""
    try:
        index, seal_hash = int(exported["index"]), str(exported["seal_hash"])
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise InvalidInput(
            "An exported seal needs its 'index' and 'seal_hash' (the JSON that "
            "`verify_chain --export-seal` or GET /api/v1/audit/seals/latest wrote).",
            code="invalid_seal",
        ) from error
    if index < 0:  # seals[-1] would be the latest seal, not the one exported
        raise InvalidInput(
            f"An exported seal's index is 0 or more, not {index}.",
            code="invalid_seal",
            details={"index": ["must be 0 or more"]},
        )
    result.checked_against = {"index": index, "seal_hash": seal_hash}
    if index >= len(seals):
        reason = "the exported seal is missing from the chain"
        result.problem(index, -1, kind="seal", index=index, reason=reason)
    elif seals[index].seal_hash != seal_hash:
        result.problem(
            index,
            -1,
            kind="seal",
            index=index,
            reason="it differs from the exported copy: the chain was rewritten up to here",
        )


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


def _decision_hashes() -> Iterator[list[tuple[int, bytes, str]]]:
    """(id, content hash recomputed from the stored fields, stored hash), in chunks by id."""
    versions = {
        pk: (name, version, sha, parse_schema(schema).sensitive_names)
        for pk, name, version, sha, schema in ModelVersion.objects.values_list(
            "pk", "registered_model__name", "version", "artifact_sha256", "schema"
        )
    }
    table = Decision._meta.db_table
    if _can_use_processes():
        yield from _hashed_in_processes(table, versions)
        return
    for chunk in _chunks(table, _decision_columns()):
        yield hash_decision_rows(chunk, versions)


def hash_decision_rows(rows: list[tuple], versions: dict) -> list[tuple[int, bytes, str]]:
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
        out.append((pk, sha256(dumps(document, option=_SORTED)).digest(), stored))
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


def _hashed_in_processes(table: str, versions: dict) -> Iterator[list[tuple[int, bytes, str]]]:
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


def _hash_range(task) -> list[tuple[int, bytes, str]]:
    """In a worker process: read one id range on a new connection and hash it."""
    import psycopg

    params, sql, start, end, versions = task
    with psycopg.connect(**params) as conn, conn.cursor() as cursor:
        cursor.execute(sql, (start, end))
        return hash_decision_rows(cursor.fetchall(), versions)


def _event_hashes() -> Iterator[list[tuple[int, bytes, str]]]:
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
            out.append((pk, hashlib.sha256(canonical_bytes(document)).digest(), stored))
        yield out


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
