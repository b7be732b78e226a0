"""Reads that see the database at one moment while writers go on.

A check that compares two tables (a row and the record written with it, a
decision and its ingestion event) or a document whose numbers must add up (a
compliance report) would otherwise see a row committed between two of its
reads on one side only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from auditapp.replicas import read_alias

_open = threading.local()  # the alias of this thread's open one_moment snapshot, if any


@contextmanager
def one_moment() -> Iterator[None]:
    """Every read inside sees one snapshot; nothing inside may write on this connection.

    PostgreSQL: one REPEATABLE READ, READ ONLY transaction. SQLite in WAL mode: a
    DEFERRED transaction, whose reads share one snapshot and take no write lock
    (the IMMEDIATE mode the settings choose for writers would block every writer
    meanwhile), with `query_only` as PostgreSQL's READ ONLY. Inside a caller's
    transaction its reads are already its own: nothing changes.

    The snapshot is taken where the reads go: on the replica inside
    `replicas.from_replica()` (a replica serves REPEATABLE READ, READ ONLY), else
    on the primary.
    """
    alias = read_alias()
    connection = connections[alias]
    if connection.in_atomic_block:
        yield
        return
    outer, _open.snapshot = getattr(_open, "snapshot", None), alias
    try:
        if connection.vendor == "postgresql":
            with transaction.atomic(using=alias), connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield
        else:
            with _deferred(), connection.cursor() as cursor:
                cursor.execute("PRAGMA query_only = ON")
                try:
                    yield
                finally:
                    cursor.execute("PRAGMA query_only = OFF")
    finally:
        _open.snapshot = outer  # one on the primary inside one on the replica, say


def exported_snapshot(alias: str = DEFAULT_DB_ALIAS) -> str | None:
    """The id of this thread's one_moment snapshot on `alias`, for another connection to read
    in it (`SET TRANSACTION SNAPSHOT`, PostgreSQL): None when none is open there, or on
    SQLite. Inside one_moment nothing is written, so the other connection sees exactly
    what this one does."""
    connection = connections[alias]
    if getattr(_open, "snapshot", None) != alias or connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_export_snapshot()")
        (snapshot,) = cursor.fetchone()
    return snapshot


@contextmanager
def _deferred() -> Iterator[None]:
    """A transaction that SQLite begins DEFERRED, whatever the settings' mode for writers."""
    connection = connections[DEFAULT_DB_ALIAS]  # SQLite has no replica (settings refuse one)
    with ExitStack() as stack:
        connection.ensure_connection()
        mode, connection.transaction_mode = connection.transaction_mode, "DEFERRED"
        try:
            stack.enter_context(transaction.atomic())  # BEGIN is sent here
        finally:
            connection.transaction_mode = mode
        yield


def write_now(write: Callable[[], object]) -> None:
    """Run `write` and commit it at once, even inside `one_moment` (on a connection of its own).

    For progress that a poller must see while a long read is under way. Writes go to
    the primary: a snapshot on the replica leaves the primary's connection free.
    """
    if getattr(_open, "snapshot", None) != DEFAULT_DB_ALIAS:
        write()
        return
    failure: list[BaseException] = []

    def run() -> None:
        try:
            write()
        except BaseException as exc:  # raised again in the caller's thread
            failure.append(exc)
        finally:
            connections[DEFAULT_DB_ALIAS].close()

    thread = threading.Thread(target=run, name="write-beside")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
