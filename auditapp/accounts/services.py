"""Writes for users, roles, model assignments and API tokens."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.accounts.authentication import hash_key
from auditapp.accounts.models import ApiToken


class AccountError(ValueError):
    """A request about users or tokens that cannot be carried out; the message says why."""


@transaction.atomic
def create_user(
    username: str, role: str, *, password: str | None = None, email: str = "", actor=None
):
    """Create a user with exactly one role. Without a password the account cannot log in."""
    if role not in roles.ROLES:
        raise AccountError(f"Unknown role {role!r}; choose one of: {', '.join(roles.ROLES)}.")
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        raise AccountError(f"A user named {username!r} already exists.")
    is_admin = role == roles.ADMIN  # admins run the Django admin too
    user = user_model(username=username, email=email, is_staff=is_admin, is_superuser=is_admin)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    user.groups.add(Group.objects.get(name=role))
    record_event("user.created", actor=actor, target=user, role=role)
    return user


@transaction.atomic
def create_api_token(
    user,
    *,
    scopes: list[str],
    model_names: list[str] | None = None,
    expires_days: int | None = None,
    name: str = "",
    actor=None,
) -> tuple[ApiToken, str]:
    """Create a token and return it with its key; the key is not stored and not shown again."""
    unknown = sorted(set(scopes) - set(roles.SCOPES))
    if unknown or not scopes:
        raise AccountError(
            f"Unknown scope(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from: {', '.join(roles.SCOPES)}."
        )
    if expires_days is not None and expires_days <= 0:
        raise AccountError("--expires-days must be a positive number of days.")
    key = "att_" + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        key_prefix=key[:12],
        key_hash=hash_key(key),
        scopes=sorted(set(scopes)),
        model_names=sorted(set(model_names or [])),
        expires_at=timezone.now() + timedelta(days=expires_days) if expires_days else None,
    )
    record_event(
        "token.created",
        actor=actor,
        target=token,
        owner=user.get_username(),
        scopes=token.scopes,
        models=token.model_names,
    )
    return token, key


@transaction.atomic
def revoke_api_token(token: ApiToken, *, actor=None) -> None:
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    record_event("token.revoked", actor=actor, target=token, owner=token.user.get_username())
