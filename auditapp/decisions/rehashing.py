"""Reading the log's rows back and recomputing their content hashes, in chunks, on a
prefetching thread or in worker processes (verification's heavy part)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any, cast

import orjson
from django.db import connection, transaction

from auditapp.accounts.models import AuditEvent, LogRecord, event_document
from auditapp.decisions.models import Decision
from auditapp.encryption import (
    Keyring,
    UnreadableInputs,
    key_id_of,
    keyring,
    open_sealed,
    row_binding,
)
from auditapp.hashing import (
    canonical_bytes,
    canonical_ip,
    decision_document,
)
from auditapp.registry.models import ModelVersion
from auditapp.snapshots import exported_snapshot
from explain.schema import parse_schema

CHUNK = 20_000  # rows fetched per round trip while verifying
Row = tuple[Any, ...]  # a row as the database driver returns it
_SORTED = orjson.OPT_SORT_KEYS


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
    "arm",
    "served_by",
    "document_form",
    "kept_commitments",
    "sealed_inputs",
)
RANGE = 50_000  # decision ids per task when hashing in processes
# model version id -> (model name, version, artifact sha256, sensitive feature names, model id)
Versions = dict[int, tuple[str, str, str, frozenset[str], int]]


def _decision_columns() -> list[str]:
    json_columns = {"inputs", "prediction", "metadata", "kept_commitments"}
    time_columns = {"predicted_at", "recorded_at"}
    return [
        _json(c) if c in json_columns else _time(c) if c in time_columns else c
        for c in DECISION_COLUMNS
    ]


def decision_hashes(
    processes: bool, where: str = "", params: Sequence[Any] = ()
) -> Iterator[list[tuple[int, bytes, str, str]]]:
    """(id, content hash recomputed from the stored fields, stored hash), in chunks by id.

    `where`: an SQL condition on the decisions table's columns choosing the rows (with
    `params`), e.g. one version's decisions of a report's period; all of them without it.
    """
    versions = {
        pk: (name, version, sha, parse_schema(schema).sensitive_names, model_id)
        for pk, name, version, sha, schema, model_id in ModelVersion.objects.values_list(
            "pk",
            "registered_model__name",
            "version",
            "artifact_sha256",
            "schema",
            "registered_model_id",
        )
    }
    table = Decision._meta.db_table
    if processes and _can_use_processes():
        yield from _hashed_in_processes(table, versions, where, params)
        return
    for chunk in _chunks(table, _decision_columns(), where, params):
        yield hash_decision_rows(chunk, versions)


def hash_decision_rows(rows: list[Row], versions: Versions) -> list[tuple[int, bytes, str, str]]:
    """Each row's content hash, recomputed from its stored columns (DECISION_COLUMNS).

    The sensitive features are the version's schema's: a schema edited to unmask
    one no longer reproduces the hashes of the decisions it recorded.
    """
    sha256, dumps, loads = hashlib.sha256, orjson.dumps, orjson.loads
    ring = keyring()
    out = []
    for pk, version_id, request_id, subject, inputs, prediction, score, *rest in rows:
        predicted_at, recorded_at, source, metadata, salt, stored, arm, served_by, *form = rest
        document_form, kept, sealed = form
        model, version, artifact, sensitive, model_id = versions[version_id]
        values = loads(inputs)
        if sealed is not None:
            opened = _opened(sealed, row_binding(model_id, request_id), ring)
            if opened is None:  # not this row's blob, or altered: the row does not match
                out.append((pk, bytes(32), stored, recorded_at))
                continue
            values.update(opened)
        fields = {
            "artifact_sha256": artifact,
            "inputs": values,
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
            "arm": arm,
            "served_by": served_by,
        }
        document = decision_document(
            fields,
            sensitive,
            None if salt is None else bytes(salt),
            document_form,
            None if kept is None else loads(kept),
        )
        out.append((pk, sha256(dumps(document, option=_SORTED)).digest(), stored, recorded_at))
    return out


def _opened(sealed: bytes, row: str, ring: Keyring) -> dict[str, Any] | None:
    """The sealed values of a row, None if they do not open under their key for this row
    (moved or altered). A key that is not configured is an error, not a
    mismatch: verification cannot judge what it cannot read."""
    try:
        return open_sealed(sealed, row, ring)
    except UnreadableInputs:
        if key_id_of(sealed) not in ring.keys:
            raise
        return None


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


def _hashed_in_processes(
    table: str, versions: Versions, where: str = "", params: Sequence[Any] = ()
) -> Iterator[list[tuple[int, bytes, str, str]]]:
    """The decisions hashed by one process per core, RANGE ids a task, returned in id order.

    Hashing is Python's work under one lock; a million decisions take half the
    time on two cores. Each process reads its ids on a connection of its own.
    """
    chosen = f"({where}) AND " if where else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT min(id), max(id) FROM {table}{_where(where)}", params)
        low, high = cursor.fetchone()
    if low is None:
        return
    sql = (
        f"SELECT {', '.join(_decision_columns())} FROM {table} "
        f"WHERE {chosen}id >= %s AND id < %s ORDER BY id"
    )
    connect = {k: v for k, v in connection.get_connection_params().items() if k != "context"}
    tasks = [
        (connect, sql, (*params, start, end), versions)
        for start, end in _id_ranges(table, low, high, chosen, params)
    ]
    processes = min(len(tasks), os.cpu_count() or 2, 4)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        yield from pool.imap(_hash_range, tasks)


def _id_ranges(
    table: str, low: int, high: int, chosen: str = "", params: Sequence[Any] = ()
) -> list[tuple[int, int]]:
    """Ranges of RANGE ids from low to high, skipping the gaps no row falls in.

    On PostgreSQL ids jump from one month to the next by 2^32 (auditapp/partitions.py):
    stepping over every range of the gap would make billions of empty tasks.
    """
    ranges = []
    start = low
    with connection.cursor() as cursor:
        while start is not None and start <= high:
            ranges.append((start, start + RANGE))
            cursor.execute(
                f"SELECT min(id) FROM {table} WHERE {chosen}id >= %s", [*params, start + RANGE]
            )
            (start,) = cursor.fetchone()
    return ranges


def _hash_range(
    task: tuple[dict[str, Any], str, tuple[Any, ...], Versions],
) -> list[tuple[int, bytes, str, str]]:
    """In a worker process: read one id range on a new connection and hash it."""
    import psycopg

    connect, sql, params, versions = task
    with psycopg.connect(**connect) as conn, conn.cursor() as cursor:
        cursor.execute(sql, params)
        return hash_decision_rows(cursor.fetchall(), versions)


def event_hashes() -> Iterator[list[tuple[int, bytes, str, str]]]:
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


def record_hashes() -> Iterator[list[tuple[int, bytes, str, str]]]:
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


def _where(condition: str) -> str:
    return f" WHERE {condition}" if condition else ""


def _chunks(
    table: str, columns: list[str], where: str = "", params: Sequence[Any] = ()
) -> Iterator[list[Row]]:
    """Rows in id order, CHUNK at a time.

    On PostgreSQL, outside a transaction, the next chunk is fetched on a second
    connection while this thread hashes the last one, so the server's work and
    the hashing overlap (audit events; decisions are hashed in processes).
    Inside a one_moment snapshot (a report) the second connection reads in that
    snapshot, exported (nothing is written inside one). Inside another transaction
    (tests, or a caller's atomic block) another connection could not see uncommitted
    rows, so the rows are read here.
    """
    sql = f"SELECT {', '.join(columns)} FROM {table}{_where(where)} ORDER BY id"
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        yield from _prefetched(sql, params)
    elif (snapshot := exported_snapshot()) is not None:  # inside one_moment: read in it
        yield from _prefetched(sql, params, snapshot=snapshot)
    else:
        yield from _fetched(sql, params)


def _fetched(
    sql: str, params: Sequence[Any] = (), snapshot: str | None = None
) -> Iterator[list[Row]]:
    """The rows of `sql` from a server-side cursor on this thread's connection (in the
    exported `snapshot` when given: the transaction begins by importing it)."""
    with transaction.atomic():
        if snapshot is not None:
            with connection.cursor() as setup:
                setup.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                setup.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
        cursor = connection.chunked_cursor()
        try:
            cursor.execute(sql, list(params) or None)
            while chunk := cursor.fetchmany(CHUNK):
                yield chunk
        finally:
            cursor.close()


def _prefetched(
    sql: str, params: Sequence[Any] = (), depth: int = 2, snapshot: str | None = None
) -> Iterator[list[Row]]:
    """_fetched on a thread of its own (its own connection), at most `depth` chunks ahead:
    PostgreSQL reads and converts the next chunk while this thread hashes the last."""
    chunks: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for chunk in _fetched(sql, params, snapshot):
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
            yield cast(list[Row], item)
    finally:
        stop.set()
        fetcher.join()


_DONE = object()
