"""`Authorization: Token <key>` against hashed, scoped ApiTokens; signed-in users' sessions.

Failed token authentications are limited per client address here, before the
token is looked up: DRF's throttles run only after authentication, so a bad token
would otherwise always get its 401 and never a 429.

With Redis, a token request's block, rate counts and the configuration revision are read
in one round trip (throttling.admit), and a token read before at the same revision is
not read again (accounts/revision.py): a revoked token, a removed role or a deactivated
user changes the revision, so each counts at the next request in every process.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import timedelta

from django.contrib.auth import backends, get_user_model
from django.utils import timezone
from rest_framework import authentication, exceptions

from auditapp.accounts import roles
from auditapp.accounts.models import ApiToken
from auditapp.accounts.revision import RevisionCache
from auditapp.accounts.throttling import (
    ADMISSION_ATTRIBUTE,
    admit,
    client_address,
    note_token_failure,
    token_block_remaining,
)

# Writing last_used_at on every request would double the cost of a small
# ingestion call; once a minute is precise enough to audit token use.
LAST_USED_RESOLUTION = timedelta(seconds=60)
# key hash -> (the token, its user and the user's group names), as read at a revision
_tokens = RevisionCache()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiTokenAuthentication(authentication.TokenAuthentication):
    keyword = "Token"
    model = ApiToken

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None  # no token presented: nothing to count
        address = client_address(request)
        key_hash = hash_key(header[1].decode(errors="replace")) if len(header) == 2 else ""
        admission = admit(request, address, key_hash)
        setattr(request, ADMISSION_ATTRIBUTE, admission)
        self.revision = admission.revision if admission is not None else None
        remaining = (
            admission.blocked_for if admission is not None else token_block_remaining(address)
        )
        if remaining is not None:
            raise exceptions.Throttled(
                wait=remaining,
                detail="Too many failed token authentications from this address.",
            )
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            note_token_failure(address)
            raise

    def authenticate_credentials(self, key: str):
        key_hash = hash_key(key)
        revision = getattr(self, "revision", None)
        cached = _tokens.get(key_hash, revision)
        if cached is None:
            cached = self._read(key_hash)
            if cached is None:
                raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
            _tokens.put(key_hash, revision, cached)
        # Each request its own objects: a request notes things on them (its roles).
        token, user = copy.copy(cached[0]), copy.copy(cached[1])
        token.user = user
        token.revision = revision  # what the Actor's later reads may be cached by
        now = timezone.now()
        if not token.is_usable(now):
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("The token's user is inactive.")
        roles.remember_roles(user, cached[2])
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            cached[0].last_used_at = token.last_used_at = now
        return user, token

    @staticmethod
    def _read(key_hash: str):
        """(token, its user, the rows of the user's groups) of a key hash, in one query;
        None if no token has it."""
        rows = list(
            roles.with_roles(ApiToken.objects.select_related("user"), "user__")
            .filter(key_hash=key_hash)
            .only(
                "id",
                "key_hash",
                "key_prefix",
                "scopes",
                "model_names",
                "expires_at",
                "revoked_at",
                "last_used_at",
                "user",
            )
        )
        if not rows:
            return None
        return rows[0], rows[0].user, rows  # one row per group of its user


class ModelBackend(backends.ModelBackend):
    """Django's ModelBackend; a session's user is read with their roles, in one query."""

    def get_user(self, user_id):
        rows = list(roles.with_roles(get_user_model()._default_manager.filter(pk=user_id)))
        if not rows:
            return None
        user = rows[0]  # one row per group
        roles.remember_roles(user, rows)
        return user if self.user_can_authenticate(user) else None
