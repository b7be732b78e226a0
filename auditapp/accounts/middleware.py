"""Two factors before anything else, for the roles that must (roles.two_factor_required)."""

from __future__ import annotations

from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip, record_event

# What a signed-in user who still owes a code may reach: the two pages that take it, and
# the way out.
OPEN_URL_NAMES = ("two-factor-enroll", "two-factor-verify", "logout")


class TwoFactorMiddleware:
    """Until a session has given a TOTP code, a user who must use two factors gets the
    verification page (which sends those without a device to enrolment), and the API
    answers their session 403. Requests with an API token carry no session: unaffected.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if (
            user.is_authenticated
            and not user.is_verified()
            and roles.two_factor_required(user)
            and request.path not in {reverse(name) for name in OPEN_URL_NAMES}
        ):
            if request.path.startswith("/api/"):
                return self._refuse_api(request)
            query = urlencode({"next": request.get_full_path()})
            return redirect(f"{reverse('two-factor-verify')}?{query}")
        return self.get_response(request)

    @staticmethod
    def _refuse_api(request) -> JsonResponse:
        """403 in the API's error shape, audited as every 403 is (web/api_errors.py)."""
        message = "Give your two-factor code on the site first (a session, not a token)."
        record_event(
            "access.denied",
            user=request.user,
            ip=client_ip(request),
            path=request.path,
            method=request.method,
            reason=message,
        )
        body = {"error": {"code": "forbidden", "message": message, "details": None}}
        return JsonResponse(body, status=403)
