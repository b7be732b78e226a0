"""`Authorization: Token <key>` against hashed, scoped ApiTokens; signed-in users' sessions.

Failed token authentications are limited per client address here, before the
token is looked up: DRF's throttles run only after authentication, so a bad token
would otherwise always get its 401 and never a 429.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.contrib.auth import backends, get_user_model
from django.utils import timezone
from rest_framework import authentication, exceptions

from auditapp.accounts import roles
from auditapp.accounts.models import ApiToken
from auditapp.accounts.throttling import client_address, note_token_failure, token_block_remaining

# Writing last_used_at on every request would double the cost of a small
# ingestion call; once a minute is precise enough to audit token use.
LAST_USED_RESOLUTION = timedelta(seconds=60)


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
        remaining = token_block_remaining(address)
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
        rows = list(
            roles.with_roles(ApiToken.objects.select_related("user"), "user__")
            .filter(key_hash=hash_key(key))
            .only(
                "id",
                "key_prefix",
                "scopes",
                "model_names",
                "expires_at",
                "revoked_at",
                "last_used_at",
                "user",
            )
        )
        token = rows[0] if rows else None  # one row per group of its user
        now = timezone.now()
        if token is None or not token.is_usable(now):
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The token's user is inactive.")
        roles.remember_roles(token.user, rows)
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        return token.user, token


class ModelBackend(backends.ModelBackend):
    """Django's ModelBackend; a session's user is read with their roles, in one query."""

    def get_user(self, user_id):
        rows = list(roles.with_roles(get_user_model()._default_manager.filter(pk=user_id)))
        if not rows:
            return None
        user = rows[0]  # one row per group
        roles.remember_roles(user, rows)
        return user if self.user_can_authenticate(user) else None
