"""Single sign-on by OpenID Connect: mozilla-django-oidc's backend and views, made Attest's.

What this adds to the library:

- the IdP's endpoints and keys come from its discovery document
  (`<ATTEST_OIDC_ISSUER>/.well-known/openid-configuration`), read at the first sign-in
  that needs them and kept an hour in the cache, never at start-up;
- the ID token is checked for its audience (our client id), its issuer, and its
  expiry, which the library leaves unchecked, besides the signature and nonce it checks;
- the user is found by the IdP's (issuer, subject) and created, updated, and given the
  roles its groups map to (ATTEST_OIDC_ROLE_MAP) at every sign-in, by
  `services.sign_on`; refusals and failures are audit events and a message on the
  login page;
- the backend answers only the callback of a sign-in it started (a nonce is passed),
  never a username and password.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpResponseRedirect
from django.urls import reverse
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.accounts.authentication import ModelBackend
from auditapp.accounts.services import SignOn, record_sso_failure, sign_on

log = logging.getLogger(__name__)

DISCOVERY_CACHE_SECONDS = 3600
# The login page's ?sso= when the IdP cannot be reached or a sign-in failed otherwise.
SSO_UNAVAILABLE = "unavailable"
SSO_FAILED = "failed"
# Seconds of clock difference with the IdP tolerated on the ID token's times.
CLOCK_LEEWAY = 60


class SSOError(Exception):
    """A sign-in the IdP's answers do not support (the message says why, for the audit log)."""


def provider_configuration() -> dict[str, Any]:
    """The IdP's discovery document, checked (its issuer is ours) and cached for an hour."""
    issuer = settings.ATTEST_OIDC_ISSUER
    key = "oidc-discovery:" + hashlib.sha256(issuer.encode()).hexdigest()
    document = cache.get(key)
    if document is None:
        response = requests.get(
            f"{issuer}/.well-known/openid-configuration", timeout=settings.OIDC_TIMEOUT
        )
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer:
            raise SSOError("the discovery document names another issuer")
        missing = [
            k
            for k in ("authorization_endpoint", "token_endpoint", "jwks_uri")
            if not document.get(k)
        ]
        if missing:
            raise SSOError(f"the discovery document has no {', '.join(missing)}")
        cache.set(key, document, DISCOVERY_CACHE_SECONDS)
    return document


def roles_for_groups(groups: list[str]) -> tuple[str, ...]:
    """The roles the IdP's groups map to (ATTEST_OIDC_ROLE_MAP), sorted; unknown roles dropped."""
    mapping: Mapping[str, str] = settings.ATTEST_OIDC_ROLE_MAP
    return tuple(sorted({mapping[g] for g in groups if mapping.get(g) in roles.ROLES}))


def _groups(claims: Mapping[str, Any]) -> list[str]:
    value = claims.get(settings.ATTEST_OIDC_GROUPS_CLAIM) or []
    if isinstance(value, str):
        value = [value]
    return [g for g in value if isinstance(g, str)] if isinstance(value, list) else []


class SSOBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend with discovery, full ID token checks and Attest's users."""

    def __init__(self, *args, **kwargs):
        # Not the library's: it reads the endpoints from settings at construction, and
        # Django constructs every backend for every sign-in, local ones included.
        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:
        return provider_configuration()["token_endpoint"]

    @property
    def OIDC_OP_JWKS_ENDPOINT(self) -> str:
        return provider_configuration()["jwks_uri"]

    @property
    def OIDC_OP_USER_ENDPOINT(self) -> str | None:
        return provider_configuration().get("userinfo_endpoint")

    def authenticate(self, request, **kwargs):
        """Only the callback of a sign-in started here (it passes the nonce kept in the session)."""
        if request is None or "nonce" not in kwargs or not settings.ATTEST_OIDC_ENABLED:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except (
            SSOError,
            SuspiciousOperation,
            jwt.InvalidTokenError,
            requests.RequestException,
            KeyError,  # an answer without a field it must have (a JWKS key without "kid")
            ValueError,
        ) as error:
            log.warning("sso.failed reason=%s", error)
            record_sso_failure(
                f"{type(error).__name__}: {error}",
                provider=settings.ATTEST_OIDC_PROVIDER_NAME,
                ip=client_ip(request),
            )
            request.attest_sso_refusal = SSO_FAILED
            return None

    def get_payload_data(self, token, key):
        """The ID token's claims: signature, algorithm, audience, issuer and times checked."""
        algorithm = jwt.get_unverified_header(token).get("alg")
        if algorithm != self.OIDC_RP_SIGN_ALGO:  # never "none", nor a key confused for a secret
            raise SSOError(
                f"the ID token is signed with {algorithm!r}, not {self.OIDC_RP_SIGN_ALGO}"
            )
        return jwt.decode(
            token,
            key,
            algorithms=[self.OIDC_RP_SIGN_ALGO],
            audience=self.OIDC_RP_CLIENT_ID,
            issuer=provider_configuration()["issuer"],
            leeway=CLOCK_LEEWAY,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )

    def get_userinfo(self, access_token, id_token, payload):
        """The ID token's claims, with the user info endpoint's over them (same subject)."""
        if not self.OIDC_OP_USER_ENDPOINT:
            return dict(payload)
        info = super().get_userinfo(access_token, id_token, payload)
        if not isinstance(info, dict) or info.get("sub") != payload.get("sub"):
            raise SSOError("the user info is about another subject than the ID token")
        return {**payload, **info}

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.get_userinfo(access_token, id_token, payload)
        username = str(claims.get(settings.ATTEST_OIDC_USERNAME_CLAIM) or "").strip()
        if not username or len(username) > 150:
            raise SSOError(f"the claim {settings.ATTEST_OIDC_USERNAME_CLAIM!r} gives no username")
        groups = _groups(claims)
        sign_in = SignOn(
            issuer=str(payload["iss"]).rstrip("/"),
            subject=str(payload["sub"]),
            username=username,
            email=str(claims.get("email") or "")[:254],
            groups=tuple(groups),
            roles=roles_for_groups(groups),
            provider=settings.ATTEST_OIDC_PROVIDER_NAME,
        )
        user, refusal = sign_on(sign_in, ip=client_ip(self.request))
        if refusal:
            self.request.attest_sso_refusal = refusal
        return user

    def get_user(self, user_id):
        """A session's user, read with their roles in one query (as for local sign-ins)."""
        return ModelBackend().get_user(user_id)


class SSOStartView(OIDCAuthenticationRequestView):
    """GET /accounts/sso/start/?next=: to the IdP's authorization endpoint (code, PKCE, nonce)."""

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # the library's reads its endpoint at construction
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID

    @property
    def OIDC_OP_AUTH_ENDPOINT(self) -> str:
        return provider_configuration()["authorization_endpoint"]

    def get(self, request):
        if not settings.ATTEST_OIDC_ENABLED:
            raise Http404("Single sign-on is not configured.")
        try:
            return super().get(request)
        except (SSOError, requests.RequestException, ValueError) as error:
            log.warning("sso.unavailable reason=%s", error)
            return HttpResponseRedirect(f"{reverse('login')}?sso={SSO_UNAVAILABLE}")


class SSOCallbackView(OIDCAuthenticationCallbackView):
    """GET /accounts/sso/callback/?code=&state=: the IdP's answer, signed in or refused."""

    def get(self, request):
        if not settings.ATTEST_OIDC_ENABLED:
            raise Http404("Single sign-on is not configured.")
        error = request.GET.get("error")
        if error and request.GET.get("state") in request.session.get("oidc_states", {}):
            record_sso_failure(
                f"the provider answered {error[:100]}",
                provider=settings.ATTEST_OIDC_PROVIDER_NAME,
                ip=client_ip(request),
            )
        return super().get(request)

    def login_failure(self):
        self.request.session.pop("oidc_id_token", None)
        reason = getattr(self.request, "attest_sso_refusal", SSO_FAILED)
        return HttpResponseRedirect(f"{reverse('login')}?sso={reason}")


def logout_url(request) -> str | None:
    """The IdP's end-session address (RP-initiated logout), if it has one and we signed in there."""
    id_token = request.session.get("oidc_id_token")
    if not settings.ATTEST_OIDC_ENABLED or not id_token:
        return None
    try:
        endpoint = provider_configuration().get("end_session_endpoint")
    except (SSOError, requests.RequestException, ValueError):
        return None  # the Attest session ends all the same
    if not endpoint:
        return None
    query = {
        "id_token_hint": id_token,
        "client_id": settings.OIDC_RP_CLIENT_ID,
        "post_logout_redirect_uri": request.build_absolute_uri(reverse("login")),
    }
    return f"{endpoint}?{urlencode(query)}"
