"""Signing in and out, and the two-factor pages (enrol a TOTP device, give a code)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django_otp import login as otp_login

from auditapp.accounts import roles, services, sso, two_factor
from auditapp.accounts.audit import client_ip

# The login page's ?sso=: what went wrong, in words (accounts/services.py, sso.py).
SSO_MESSAGES = {
    services.SSO_NO_ROLE: (
        "Your account at {provider} is in no group that has a role in Attest. Ask an "
        "administrator to add you to one. The refusal is recorded in the audit log."
    ),
    services.SSO_INACTIVE: "Your Attest account is disabled. Ask an administrator.",
    services.SSO_NAME_TAKEN: (
        "An Attest account with your name exists and is not linked to your {provider} "
        "account. Ask an administrator."
    ),
    sso.SSO_FAILED: (
        "Signing in through {provider} failed. Try again; the failure is recorded in the audit log."
    ),
    sso.SSO_UNAVAILABLE: (
        "{provider} cannot be reached just now. Try again later, or log in with an Attest account."
    ),
}


class LoginView(auth_views.LoginView):
    """Username and password; and "Sign in with <provider>" when single sign-on is on."""

    template_name = "accounts/login.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        provider = settings.ATTEST_OIDC_PROVIDER_NAME
        message = SSO_MESSAGES.get(self.request.GET.get("sso", ""))
        context |= {
            "sso_enabled": settings.ATTEST_OIDC_ENABLED,
            "sso_provider": provider,
            "sso_error": message.format(provider=provider) if message else "",
        }
        return context


class LogoutView(auth_views.LogoutView):
    """Ends the Attest session; then the IdP's too, when signed in there and it offers to."""

    def post(self, request, *args, **kwargs):
        end_session = sso.logout_url(request)  # read before the session is gone
        response = super().post(request, *args, **kwargs)
        return HttpResponseRedirect(end_session) if end_session else response


def _next(request) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return settings.LOGIN_REDIRECT_URL


def _page(url_name: str, request) -> str:
    return f"{reverse(url_name)}?{urlencode({'next': _next(request)})}"


@login_required
def two_factor_enroll(request):
    """Scan the QR code (or type the secret) into an authenticator app, then give a code."""
    if not roles.two_factor_required(request.user):
        raise Http404("Two-factor authentication is not asked of your role.")
    if two_factor.confirmed_device(request.user) is not None:
        return redirect(_page("two-factor-verify", request))
    device = two_factor.pending_device(request.user)
    check = None
    if request.method == "POST":
        check = two_factor.confirm_device(
            request.user, request.POST.get("code", ""), ip=client_ip(request)
        )
        if check.accepted:
            otp_login(request, check.device)
            return redirect(_next(request))
    uri = device.config_url
    context = {
        "uri": uri,
        "qr_svg": two_factor.qr_code_svg(uri),
        "secret": uri.split("secret=", 1)[1].split("&", 1)[0],
        "check": check,
        "next": _next(request),
    }
    return render(request, "accounts/two_factor_enroll.html", context, status=_status(check))


@login_required
def two_factor_verify(request):
    """The sign-in's second step: a code from the enrolled device."""
    if not roles.two_factor_required(request.user):
        raise Http404("Two-factor authentication is not asked of your role.")
    if request.user.is_verified():
        return redirect(_next(request))
    if two_factor.confirmed_device(request.user) is None:
        return redirect(_page("two-factor-enroll", request))
    check = None
    if request.method == "POST":
        check = two_factor.verify_code(
            request.user, request.POST.get("code", ""), ip=client_ip(request)
        )
        if check.accepted:
            otp_login(request, check.device)
            return redirect(_next(request))
    context = {"check": check, "next": _next(request)}
    return render(request, "accounts/two_factor_verify.html", context, status=_status(check))


def _status(check: two_factor.CodeCheck | None) -> int:
    if check is None:
        return 200
    return 429 if check.throttled else 400
