"""Django's Redis cache, keeping one redis-py client per connection pool.

Django's RedisCacheClient builds a new `redis.Redis` for every cache call, and
each build fills redis-py's table of response callbacks (about 0.2 ms). A
request that is throttled per token and per address makes several calls, so
the search paid about a millisecond for it. A client over a pool is safe to
share between threads, so one per pool is kept. It also counts in one round trip
(`count`, for the API's rate limits).
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class _ReusedClients(RedisCacheClient):
    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers, **options)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients.setdefault(id(pool), self._client(connection_pool=pool))
        return client


# Add one to a counter, giving it its time to live if it has none: one round trip,
# atomic, whatever the Redis version.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


# Read some keys and add one to some counters (each given its time to live if it has none):
# an API request's admission in one round trip. KEYS: the read ones, then the counters;
# ARGV: how many are read, then each counter's time to live.
_READ_AND_COUNT = """
local reads = tonumber(ARGV[1])
local answer = {}
for i = 1, reads do answer[i] = redis.call('GET', KEYS[i]) or false end
for i = reads + 1, #KEYS do
  answer[i] = redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) == -1 then redis.call('EXPIRE', KEYS[i], ARGV[i - reads + 1]) end
end
return answer
"""


class ReusingRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _ReusedClients
        self._scripts: dict[tuple[int, str], Any] = {}

    def count(self, key: str, timeout: int) -> int:
        """Add one to the counter `key` (created with `timeout` seconds to live); the new count.

        One round trip, where add() then incr() take three when the counter exists
        (Django's incr asks first whether the key exists): a rate-limited request
        counts twice, per token and per address (accounts/throttling.py).
        """
        key = self.make_and_validate_key(key)
        return int(self._script(_COUNT, key)(keys=[key], args=[timeout]))

    def read_and_count(
        self, reads: list[str], counters: list[tuple[str, int]]
    ) -> tuple[list[Any], list[int]]:
        """The values of `reads` (None where missing) and the new counts of `counters`
        ((key, time to live) each, as `count`), in one round trip."""
        read_keys = [self.make_and_validate_key(k) for k in reads]
        count_keys = [self.make_and_validate_key(k) for k, _ in counters]
        script = self._script(_READ_AND_COUNT, (read_keys + count_keys)[0])
        answer = script(
            keys=read_keys + count_keys, args=[len(read_keys), *(ttl for _, ttl in counters)]
        )
        loads = self._cache._serializer.loads
        values = [None if raw is None else loads(raw) for raw in answer[: len(read_keys)]]
        return values, [int(n) for n in answer[len(read_keys) :]]

    def _script(self, source: str, key: str) -> Any:
        client = self._cache.get_client(key, write=True)
        script = self._scripts.get((id(client), source))
        if script is None:
            script = self._scripts.setdefault((id(client), source), client.register_script(source))
        return script
