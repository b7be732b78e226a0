"""Statements sent to PostgreSQL together, in one round trip (psycopg's pipeline mode).

A request that stores one decision wrote five statements and a commit, each waiting for
the server before the next was sent. Inside `pipelined()` psycopg sends each statement
at once: the server runs them in order, as always, and their results come back together
when one of them is fetched or the block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections


@contextmanager
def pipelined(enabled: bool = True, using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """On PostgreSQL, the statements run inside go out without waiting for each other.

    Fetching a result waits for everything sent before it; leaving the block waits once
    more (psycopg's Sync). A transaction's BEGIN, sent with its first statement, is a
    round trip of its own, as it is outside. An error surfaces where a result is fetched
    or where the block ends, as Django's (IntegrityError, ...), inside the caller's
    transaction, which then rolls back as it would have. COPY cannot run inside.
    Elsewhere (SQLite, in process), or not `enabled`, it changes nothing.
    """
    db = connections[using]
    if not enabled or db.vendor != "postgresql":
        yield
        return
    db.ensure_connection()
    with db.wrap_database_errors, db.connection.pipeline():
        yield
