"""Reads off the primary: a database router and the mark that allows them.

With DATABASE_REPLICA_URL set, the settings add a `replica` alias (a PostgreSQL
streaming replica) and this router. Nothing reads the replica unless it runs
inside `from_replica()`: a block or view that says it can live with data a
replay delay old (searches, list pages, reports, monitoring figures). Every
write goes to the primary, and so does every read that is not marked: a check
that must see what was just written (verification, a page shown after its
POST) stays correct without anyone having to remember it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

REPLICA = "replica"

# Who may sign in, with which roles and tokens: a change there (a revoked role, a new
# token, a new session) counts at once, even on a page that reads the replica.
PRIMARY_ONLY_APPS = frozenset({"auth", "sessions", "axes", "contenttypes"})
PRIMARY_ONLY_MODELS = frozenset({"accounts.apitoken"})

_marked: ContextVar[bool] = ContextVar("attest_from_replica", default=False)


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


def read_alias() -> str:
    """The alias the reads of this block go to: the replica only when marked, configured,
    and outside a transaction on the primary (whose reads must see its own writes)."""
    if _marked.get() and replica_configured() and not connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return REPLICA
    return DEFAULT_DB_ALIAS


@contextmanager
def from_replica() -> Iterator[str]:
    """Reads inside may go to the replica: the caller accepts the replica's lag.

    Yields the alias the reads go to. Writes inside still go to the primary.
    """
    token = _marked.set(True)
    try:
        yield read_alias()
    finally:
        _marked.reset(token)


@contextmanager
def on_primary() -> Iterator[None]:
    """Reads inside go to the primary, even within `from_replica()`: for a check that must
    see what was just written (the chain's verification)."""
    token = _marked.set(False)
    try:
        yield
    finally:
        _marked.reset(token)


def replica_view(view: Callable[..., Any]) -> Callable[..., Any]:
    """A view (a function, or a method through method_decorator) whose reads may lag.

    Who is signed in is still read from the primary (PRIMARY_ONLY_APPS).
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with from_replica():
            return view(*args, **kwargs)

    return wrapper


def complete_until(alias: str) -> datetime | None:
    """On the replica, while its replay is behind: the primary's commit time up to which
    its reads are complete (a figure computed now is as of then). None on the primary or
    once the replica has replayed all it received."""
    if alias == DEFAULT_DB_ALIAS:
        return None
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT CASE WHEN pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn()"
            " THEN pg_last_xact_replay_timestamp() END"
        )
        (moment,) = cursor.fetchone()
    return moment


class ReplicaRouter:
    """Reads to the replica inside `from_replica()`; everything else to the primary."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        if model._meta.app_label in PRIMARY_ONLY_APPS:
            return DEFAULT_DB_ALIAS
        if model._meta.label_lower in PRIMARY_ONLY_MODELS:
            return DEFAULT_DB_ALIAS
        return read_alias()

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # one database, two copies of it

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS  # the replica receives the primary's schema by replay
