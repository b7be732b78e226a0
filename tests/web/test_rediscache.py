"""The Redis cache keeps one client per pool, and still reads and writes a real Redis."""

from __future__ import annotations

import os

from auditapp.rediscache import ReusingRedisCache


def test_one_client_serves_every_call_and_values_round_trip():
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis://"):
        url = "redis://127.0.0.1:6379/15"
    cache = ReusingRedisCache(url, {"KEY_PREFIX": "attest-test-rediscache"})
    first = cache._cache.get_client(write=True)
    assert cache._cache.get_client(write=False) is first
    cache.set("answer", {"n": 42}, 30)
    assert cache.get("answer") == {"n": 42}
    assert cache.add("answer-count", 1)
    assert cache.incr("answer-count") == 2
    cache.delete_many(["answer", "answer-count"])
    assert cache.get("answer") is None
