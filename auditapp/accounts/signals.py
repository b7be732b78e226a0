"""Logins, logouts, failed logins and sign-in lockouts go to the audit log; changes of
tokens, users and groups change the configuration revision.

A single sign-on's login says so (`via`: the IdP's name); its failures and refusals are
recorded by accounts/sso.py and services.sign_on, which know why.
"""

from axes.helpers import get_cool_off
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from auditapp.accounts import revision
from auditapp.accounts.audit import client_ip, record_event
from auditapp.accounts.models import ApiToken

# The backend a single sign-on signs in with (settings.AUTHENTICATION_BACKENDS), by name:
# importing accounts/sso.py here would load the IdP's library with every process.
SSO_BACKEND = "auditapp.accounts.sso.SSOBackend"


@receiver(user_logged_in)
def _on_login(sender, request, user, **kwargs):
    via = (
        {"via": settings.ATTEST_OIDC_PROVIDER_NAME}
        if getattr(user, "backend", None) == SSO_BACKEND
        else {}
    )
    record_event("auth.login", user=user, ip=client_ip(request), **via)


@receiver(user_logged_out)
def _on_logout(sender, request, user, **kwargs):
    record_event("auth.logout", user=user, ip=client_ip(request))


@receiver(user_login_failed)
def _on_login_failed(sender, credentials, request=None, **kwargs):
    if "nonce" in credentials:  # a single sign-on's callback: recorded with its reason by sso.py
        return
    record_event(
        "auth.login_failed",
        ip=client_ip(request),
        actor_name=str(credentials.get("username", ""))[:150],
    )


@receiver(user_locked_out)
def _on_locked_out(sender, request, username=None, ip_address=None, **kwargs):
    """The failure that starts a lockout. django-axes sends the signal again for every
    attempt refused while locked; those have no failure count and are already
    recorded as auth.login_failed."""
    failures = getattr(request, "axes_failures_since_start", None)
    if failures is None:
        return
    cool_off = get_cool_off(request)
    record_event(
        "auth.locked_out",
        ip=ip_address,
        actor_name=str(username or "")[:150],
        failures=failures,
        limit=settings.AXES_FAILURE_LIMIT,
        cooloff_seconds=int(cool_off.total_seconds()) if cool_off else None,
        path=request.path,
    )


# --- the configuration revision (accounts/revision.py) ---------------------------------
# A token, a user, a group or someone's groups changed: what requests cached of who may do
# what no longer counts, in any process.
for _model in (ApiToken, get_user_model(), Group):
    post_save.connect(revision.changed, sender=_model, dispatch_uid=f"revision-{_model.__name__}")
    post_delete.connect(
        revision.changed, sender=_model, dispatch_uid=f"revision-{_model.__name__}-deleted"
    )
m2m_changed.connect(
    revision.changed, sender=get_user_model().groups.through, dispatch_uid="revision-groups"
)
