"""Writes for users, roles, model assignments and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.accounts.authentication import hash_key
from auditapp.accounts.models import ApiToken, SingleSignOnIdentity


class AccountError(ValueError):
    """A request about users or tokens that cannot be carried out; the message says why."""


@transaction.atomic
def create_user(
    username: str,
    role: str,
    *,
    password: str | None = None,
    email: str = "",
    actor=None,
    via: str = "",
):
    """Create a user with exactly one role. Without a password the account cannot log in.

    `via` names the IdP of a user created at their first single sign-on (the audit event says so).
    """
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
    record_event(
        "user.created", actor=actor, target=user, role=role, **({"via": via} if via else {})
    )
    return user


def current_roles(user) -> list[str]:
    """The roles the user holds in the database (a superuser holds admin), sorted."""
    held = set(user.groups.filter(name__in=roles.ROLES).values_list("name", flat=True))
    if user.is_superuser:
        held.add(roles.ADMIN)
    return sorted(held)


@transaction.atomic
def set_roles(user, new_roles: Iterable[str], *, actor=None, via: str = "", ip=None) -> bool:
    """Make the user's roles exactly `new_roles`; audited (`user.roles_changed`) if they change.

    Admins run the Django admin too (staff and superuser), and lose it with the role: a
    superuser holds admin whatever their groups (roles.py), so the flag must go with it.
    Groups that are not roles are left alone. Returns whether anything changed.
    """
    wanted = sorted(set(new_roles))
    unknown = sorted(set(wanted) - set(roles.ROLES))
    if unknown:
        raise AccountError(f"Unknown role(s) {', '.join(unknown)}.")
    before = current_roles(user)
    is_admin = roles.ADMIN in wanted
    if before == wanted and user.is_staff == is_admin:
        return False
    user.groups.remove(*Group.objects.filter(name__in=set(before) - set(wanted)))
    user.groups.add(*Group.objects.filter(name__in=set(wanted) - set(before)))
    user.is_staff = user.is_superuser = is_admin
    user.save(update_fields=["is_staff", "is_superuser"])
    user.__dict__.pop("_attest_roles", None)  # role_names reads them again
    if before != wanted:
        details = {"before": before, "after": wanted, **({"via": via} if via else {})}
        record_event("user.roles_changed", actor=actor, target=user, ip=ip, **details)
    return True


# --- single sign-on ---------------------------------------------------------------

# Why a single sign-on was refused: the login page's message for each (accounts/views.py).
SSO_NO_ROLE = "no_role"
SSO_INACTIVE = "inactive"
SSO_NAME_TAKEN = "name_taken"


@dataclass(frozen=True)
class SignOn:
    """What the IdP vouched for at a sign-in, and the roles its groups map to."""

    issuer: str
    subject: str
    username: str
    email: str
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    provider: str  # the IdP's name, as the login page shows it


@transaction.atomic
def sign_on(claims: SignOn, *, ip=None):
    """The user for an OpenID Connect sign-in, created or updated; or None and why not.

    The user is found by the IdP's (issuer, subject), never by name. Roles are set from
    the groups at every sign-in: a group removed at the IdP removes its role here, and
    with no group mapping to a role the user keeps none and is refused (audited as
    `auth.sso_refused`). Refusals commit: the roles they removed stay removed.

    The same person's first sign-in from two places at once would both find no identity
    and both create the user: sign-ins of one (issuer, subject) take turns (a transaction
    lock on PostgreSQL; SQLite's writers take turns anyway), so the second finds the first's.
    """
    _one_at_a_time(claims)
    identity = (
        SingleSignOnIdentity.objects.select_for_update()
        .select_related("user")
        .filter(issuer=claims.issuer, subject=claims.subject)
        .first()
    )
    user = identity.user if identity is not None else None
    if user is not None and not user.is_active:
        return None, _refuse(claims, SSO_INACTIVE, ip, user)
    if user is not None:
        set_roles(user, claims.roles, via=claims.provider, ip=ip)
    if not claims.roles:
        return None, _refuse(claims, SSO_NO_ROLE, ip, user)
    if user is None:
        if get_user_model().objects.filter(username=claims.username).exists():
            return None, _refuse(claims, SSO_NAME_TAKEN, ip, None)
        user = create_user(
            claims.username, claims.roles[0], email=claims.email, via=claims.provider
        )
        set_roles(user, claims.roles, via=claims.provider, ip=ip)
        identity = SingleSignOnIdentity.objects.create(
            user=user, issuer=claims.issuer, subject=claims.subject
        )
    if claims.email and user.email != claims.email:
        user.email = claims.email
        user.save(update_fields=["email"])
    identity.last_login_at = timezone.now()
    identity.save(update_fields=["last_login_at"])
    return user, ""


def _one_at_a_time(claims: SignOn) -> None:
    if connection.vendor != "postgresql":
        return
    digest = hashlib.sha256(f"sso\n{claims.issuer}\n{claims.subject}".encode()).digest()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)]
        )


def _refuse(claims: SignOn, reason: str, ip, user) -> str:
    record_event(
        "auth.sso_refused",
        user=user,
        actor_name=claims.username[:150],
        ip=ip,
        reason=reason,
        provider=claims.provider,
        groups=list(claims.groups)[:50],
    )
    return reason


def record_sso_failure(reason: str, *, provider: str, ip=None) -> None:
    """A single sign-on that failed before anyone was identified (a bad token, an IdP error)."""
    record_event("auth.sso_failed", ip=ip, provider=provider, reason=reason[:300])


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
