"""The configuration revision: one value, kept in Redis, that changes whenever who may do
what, or what a model serves, changes; and the per-process caches it keeps honest.

An API request costs, before any work, its token and roles, the model it names and the
model's traffic policy: a database round trip each, about a third of a small request's
time. They change seldom. Each process keeps what it read, labelled with the revision it
read it at, and an API request reads the revision in the round trip to Redis it makes
anyway (its rate limits, accounts/throttling.py): a label that is no longer the
revision is a miss. So a change counts at once in every process, as if nothing were
cached.

The revision changes after the commit of any change to a token, a user, a group or
someone's groups (accounts/signals.py), a registered model, its assignees or a version
(registry/signals.py), a traffic policy (serving/signals.py): `changed()`, from their
post_save, post_delete and m2m_changed. It is set to a fresh random value, not counted
up: a Redis that restarted empty cannot bring an old label back. Without it (Redis
restarted, or the embedded default's file cache) nothing is cached.

Entries also expire after MAX_AGE seconds, so that a change made behind the ORM's back (a
raw UPDATE in a shell) is not kept for ever.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.db import transaction

from auditapp.rediscache import ReusingRedisCache

KEY = "configuration-revision"
MAX_AGE = 300.0  # seconds
MAX_ENTRIES = 4096


def shared_cache() -> ReusingRedisCache | None:
    """The Redis cache every process shares, or None (the embedded default: no caching)."""
    backend = caches[DEFAULT_CACHE_ALIAS]
    return backend if isinstance(backend, ReusingRedisCache) else None


def changed(**_signal_arguments: Any) -> None:
    """A new revision now, and another once the current transaction commits.

    The one after the commit is the one that counts: whoever reads the database after it
    sees the change and labels what they read with it, while a process that read the old
    rows under the first label (between it and the commit) finds that label gone. The one
    now serves this connection's own reads before the commit (a test's transaction,
    which never commits)."""
    if shared_cache() is not None:
        _new_revision()
        transaction.on_commit(_new_revision)


def _new_revision() -> None:
    cache = shared_cache()
    if cache is not None:
        cache.set(KEY, secrets.token_hex(8), timeout=None)


def current() -> str | None:
    """The revision now (one round trip), creating it if Redis has none; None without Redis.
    An API request reads it with its rate counts instead (accounts/throttling.py)."""
    cache = shared_cache()
    if cache is None:
        return None
    value = cache.get(KEY)
    if value is None:
        cache.add(KEY, secrets.token_hex(8), timeout=None)
        value = cache.get(KEY)
    return value


class RevisionCache:
    """A per-process map whose entries count only at the revision they were read at."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_age: float = MAX_AGE) -> None:
        self._entries: dict[Any, tuple[str, float, Any]] = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.max_age = max_age

    def get(self, key: Any, revision: str | None) -> Any | None:
        if revision is None:
            return None
        entry = self._entries.get(key)
        if entry is None or entry[0] != revision or time.monotonic() - entry[1] > self.max_age:
            return None
        return entry[2]

    def put(self, key: Any, revision: str | None, value: Any) -> None:
        if revision is None:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (revision, time.monotonic(), value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
