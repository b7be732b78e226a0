"""The API's rate counters: one per window, counted in one Redis round trip, expiring with it."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache, caches

from auditapp.accounts.throttling import count_hit
from auditapp.rediscache import ReusingRedisCache


@pytest.fixture(autouse=True)
def own_cache(settings):
    settings.CACHES = {
        "default": {**django_settings.CACHES["default"], "KEY_PREFIX": f"t-{uuid.uuid4().hex}"}
    }


def test_hits_count_per_window_from_one():
    now = 999_960.0  # the start of window 16,666 of 60 s

    assert [count_hit("client", 60, now + s) for s in (0, 1, 59)] == [1, 2, 3]
    assert count_hit("client", 60, now + 60) == 1  # the next window
    assert count_hit("other", 60, now) == 1
    assert cache.get("client:16666") == 3  # readable as Django's cache wrote it before


def test_a_redis_counter_is_one_script_call_and_expires_after_its_window():
    backend = caches["default"]
    if not isinstance(backend, ReusingRedisCache):
        pytest.skip("the file cache counts with add() and incr()")
    client = backend._cache.get_client(write=True)
    key = backend.make_and_validate_key("client:16666")
    count_hit("client", 60, 999_960.0)  # the script is loaded once per process
    commands = []
    real = client.connection_pool.get_connection

    def counting(*args, **kwargs):
        commands.append(args)
        return real(*args, **kwargs)

    client.connection_pool.get_connection = counting
    try:
        assert count_hit("client", 60, 999_960.0) == 2
    finally:
        client.connection_pool.get_connection = real
    assert len(commands) == 1
    assert 0 < client.ttl(key) <= 61
