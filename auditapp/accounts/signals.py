"""Logins, logouts and failed logins go to the audit log."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from auditapp.accounts.audit import client_ip, record_event


@receiver(user_logged_in)
def _on_login(sender, request, user, **kwargs):
    record_event("auth.login", user=user, ip=client_ip(request))


@receiver(user_logged_out)
def _on_logout(sender, request, user, **kwargs):
    record_event("auth.logout", user=user, ip=client_ip(request))


@receiver(user_login_failed)
def _on_login_failed(sender, credentials, request=None, **kwargs):
    record_event(
        "auth.login_failed",
        ip=client_ip(request),
        actor_name=str(credentials.get("username", ""))[:150],
    )
