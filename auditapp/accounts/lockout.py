"""Sign-in lockout (django-axes): the backend that refuses locked sign-ins, and the page.

Settings (AXES_*) are in auditapp/settings.py; the lockout is written to the audit
log by accounts/signals.py.
"""

from __future__ import annotations

import math

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_cool_off
from django.shortcuts import render


class LockoutBackend(AxesStandaloneBackend):
    """Refuses sign-ins from a locked username or address; authenticates nobody itself.

    Without a request there is no address or form to count (management commands,
    the test client's login()): those are not web sign-ins, and django-axes would
    raise instead of letting ModelBackend answer.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def lockout_response(request, original_response=None, credentials=None):
    """429 with Retry-After: the refused attempt is not counted, so the lock ends by then."""
    cool_off = get_cool_off(request)
    seconds = math.ceil(cool_off.total_seconds()) if cool_off else None
    response = render(
        request,
        "accounts/locked_out.html",
        {"minutes": math.ceil(seconds / 60) if seconds else None},
        status=429,
    )
    if seconds:
        response["Retry-After"] = str(seconds)
    return response
