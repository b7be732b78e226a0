"""API rate limits: per token (or signed-in user), per client address, and on failed tokens.

Counts live in Django's cache (CACHES: Redis or files, shared by every worker) as one
counter per fixed window: one atomic increment a request (one round trip on Redis), where
DRF's own throttles keep and rewrite a list of every request's timestamp.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from auditapp.accounts import revision
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


def window_key(key: str, period: int, now: float) -> str:
    return f"{key}:{int(now // period)}"


def count_hit(key: str, period: int, now: float) -> int:
    """Add one to `key`'s counter for the current window of `period` seconds; the new count."""
    window_key_ = window_key(key, period, now)
    backend = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(backend, ReusingRedisCache):
        return backend.count(window_key_, timeout=period + 1)
    if cache.add(window_key_, 1, timeout=period + 1):
        return 1
    try:
        return cache.incr(window_key_)
    except ValueError:  # expired between add and incr
        cache.add(window_key_, 1, timeout=period + 1)
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
        key = f"throttle:{self.scope}:{ident}"
        admission = getattr(request, ADMISSION_ATTRIBUTE, None)
        count = admission.counts.get(key) if admission is not None else None
        if count is None:
            count = count_hit(key, self.duration, now)
        if count <= self.num_requests:
            return True
        self.retry_after = max(1, math.ceil(self.duration - now % self.duration))
        return False

    def wait(self):
        return self.retry_after


class TokenRateThrottle(_WindowThrottle):
    """Requests per API token; a signed-in browser session counts as its user."""

    scope = "token"

    def get_cache_key(self, request, view):
        key_hash = getattr(request.auth, "key_hash", None)
        if key_hash is not None:
            return token_ident(key_hash)
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


def token_ident(key_hash: str) -> str:
    """A token's counter: by its key's hash, known before the token is looked up."""
    return f"token-{key_hash[:16]}"


# --- a token request's admission: one round trip -------------------------------------

ADMISSION_ATTRIBUTE = "attest_admission"  # on the DRF request, for the throttles above


@dataclass(frozen=True)
class Admission:
    """What Redis said of a token request before its token was looked up: the seconds its
    address is blocked for failed tokens (or None), the configuration revision
    (accounts/revision.py), and its rate counts, by counter (read by the throttles)."""

    blocked_for: int | None
    revision: str | None
    counts: dict[str, int]


def admit(request, address: str | None, key_hash: str) -> Admission | None:
    """The block, the revision and both rate counts of a token request in one round trip
    to Redis, where they took three; None without Redis (each is then read on its own)."""
    backend = caches[DEFAULT_CACHE_ALIAS]
    if not isinstance(backend, ReusingRedisCache):
        return None
    now = time.time()
    counters = {}
    for throttle, ident in (
        (TokenRateThrottle(), token_ident(key_hash)),
        (AddressRateThrottle(), address or "unknown"),
    ):
        if throttle.rate is not None:
            key = f"throttle:{throttle.scope}:{ident}"
            counters[key] = (window_key(key, throttle.duration, now), throttle.duration + 1)
    (blocked_until, read_revision), counts = backend.read_and_count(
        [_blocked_key(address), revision.KEY], list(counters.values())
    )
    if read_revision is None:  # Redis lost it (a restart): a new one; nothing cached counts
        read_revision = revision.current()
    blocked_for = None
    if blocked_until is not None and blocked_until > now:
        blocked_for = max(1, math.ceil(blocked_until - now))
    return Admission(blocked_for, read_revision, dict(zip(counters, counts, strict=True)))


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
