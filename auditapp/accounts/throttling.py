"""API rate limits: per token (or signed-in user), per client address, and on failed tokens.

Counts live in Django's cache (CACHES: Redis or files, shared by every worker) as one
counter per fixed window: one atomic increment a request (one round trip on Redis), where
DRF's own throttles keep and rewrite a list of every request's timestamp.
"""

from __future__ import annotations

import ipaddress
import math
import time

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from auditapp.accounts.audit import record_event
from auditapp.rediscache import ReusingRedisCache


def client_address(request) -> str | None:
    """The client's address: REMOTE_ADDR, or the one our own proxies put in X-Forwarded-For.

    ATTEST_PROXY_COUNT is how many reverse proxies append to X-Forwarded-For; the client
    is the address the outermost of them saw (DRF's NUM_PROXIES rule). Anything further
    left was written by the client and is not trusted.
    """
    if request is None:
        return None
    remote = request.META.get("REMOTE_ADDR")
    proxies = settings.ATTEST_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies <= 0 or not forwarded:
        return remote
    addresses = [part.strip() for part in forwarded.split(",")]
    candidate = addresses[-min(proxies, len(addresses))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:  # not an address: a misconfigured proxy count
        return remote


def count_hit(key: str, period: int, now: float) -> int:
    """Add one to `key`'s counter for the current window of `period` seconds; the new count."""
    window_key = f"{key}:{int(now // period)}"
    backend = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(backend, ReusingRedisCache):
        return backend.count(window_key, timeout=period + 1)
    if cache.add(window_key, 1, timeout=period + 1):
        return 1
    try:
        return cache.incr(window_key)
    except ValueError:  # expired between add and incr
        cache.add(window_key, 1, timeout=period + 1)
        return 1


class _WindowThrottle(SimpleRateThrottle):
    """SimpleRateThrottle's configuration (scope, DEFAULT_THROTTLE_RATES) on a window counter."""

    def get_rate(self):
        # Read now, not at import, so that a changed setting applies.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        now = self.timer()
        if count_hit(f"throttle:{self.scope}:{ident}", self.duration, now) <= self.num_requests:
            return True
        self.retry_after = max(1, math.ceil(self.duration - now % self.duration))
        return False

    def wait(self):
        return self.retry_after


class TokenRateThrottle(_WindowThrottle):
    """Requests per API token; a signed-in browser session counts as its user."""

    scope = "token"

    def get_cache_key(self, request, view):
        token_id = getattr(request.auth, "pk", None)
        if token_id is not None:
            return f"token-{token_id}"
        if request.user and request.user.is_authenticated:
            return f"user-{request.user.pk}"
        return None


class AddressRateThrottle(_WindowThrottle):
    """Requests per client address, whoever they authenticate as."""

    scope = "address"

    def get_cache_key(self, request, view):
        return client_address(request) or "unknown"


def page_wait(request) -> int | None:
    """The API's limits (per signed-in user, per address) on a page view that costs what
    its API twin costs (the what-if runs a model): the seconds to wait when over either,
    else None. The same counters as the API's, so the page is no way around them."""
    as_api = _PageRequest(request)
    waits = [
        throttle.wait()
        for throttle in (TokenRateThrottle(), AddressRateThrottle())
        if not throttle.allow_request(as_api, None)
    ]
    return max(waits) if waits else None


class _PageRequest:
    """What the throttles read of a DRF request, from a page's request (no token)."""

    def __init__(self, request):
        self.auth = None
        self.user = request.user
        self.META = request.META


# --- failed token authentication ------------------------------------------------


def _blocked_key(address: str | None) -> str:
    return f"token-failures:blocked:{address or 'unknown'}"


def token_block_remaining(address: str | None) -> int | None:
    """Seconds until this address may present tokens again; None if it may now."""
    until = cache.get(_blocked_key(address))
    if until is None:
        return None
    remaining = until - time.time()
    return max(1, math.ceil(remaining)) if remaining > 0 else None


def note_token_failure(address: str | None) -> None:
    """Count a failed token authentication; at the limit, block the address for the window.

    The block is written to the audit log once, when it starts.
    """
    limit = settings.ATTEST_TOKEN_FAILURE_LIMIT
    window = settings.ATTEST_TOKEN_FAILURE_WINDOW
    now = time.time()
    failures = count_hit(f"token-failures:{address or 'unknown'}", window, now)
    if failures < limit:
        return
    cache.set(_blocked_key(address), now + window, timeout=window + 1)
    if failures == limit:
        record_event(
            "auth.token_locked_out",
            ip=address,
            failures=failures,
            window_seconds=window,
            blocked_seconds=window,
        )
