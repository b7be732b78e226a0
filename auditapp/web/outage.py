"""While the database, the cache or the broker cannot be reached, answer 503 with Retry-After.

The API answers in its JSON error shape (`unavailable`), pages with a plain page;
never a 500 with a traceback, DEBUG or not. The client may retry: ingestion is
all-or-nothing per request and idempotent by request_id.

Most such errors leave the view (sessions and DRF's token or session authentication
are read there, lazily), and `process_exception` answers them before Django builds
an error page. One raised by another middleware (a session saved after the view)
reaches only Django's `got_request_exception` signal: it is noted on the request,
and this middleware, outside every middleware that touches the database, replaces
the error page with the same 503.
"""

from __future__ import annotations

import logging
import sys

from django.core.signals import got_request_exception
from django.http import HttpResponse, JsonResponse

from auditapp.tasking import TRANSIENT_ERRORS
from auditapp.web.api_errors import error_body

log = logging.getLogger(__name__)

RETRY_AFTER = 10  # seconds: long enough not to hammer a restarting database
UNREACHABLE = TRANSIENT_ERRORS  # the database, the broker, the cache of rate counters
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Temporarily unavailable · Attest</title></head>
<body><h1>Attest is temporarily unavailable</h1>
<p>A service it depends on cannot be reached. Nothing you sent was half-stored:
try again in a few seconds.</p></body></html>
"""
# The page has nothing to load; the same strict policy goes on the JSON answer.
POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def unavailable(request) -> HttpResponse:
    if request.path.startswith("/api/"):
        response = JsonResponse(
            error_body(
                "unavailable",
                "The service is temporarily unavailable (its database or another dependency "
                "cannot be reached); nothing was stored. Retry after the time given in "
                "Retry-After.",
            ),
            status=503,
        )
    else:
        response = HttpResponse(PAGE, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER)
    response["Cache-Control"] = "no-store"
    response["Content-Security-Policy"] = POLICY
    return response


class OutageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if getattr(request, "_attest_unreachable", False):
            return unavailable(request)
        return response

    def process_exception(self, request, exception):
        if not isinstance(exception, UNREACHABLE):
            return None
        _log(request, exception)
        return unavailable(request)


def _note_unreachable(sender, request=None, **kwargs) -> None:
    """Django is about to build an error page for an exception outside the view."""
    exception = sys.exc_info()[1]
    if request is not None and isinstance(exception, UNREACHABLE):
        _log(request, exception)
        request._attest_unreachable = True


def _log(request, exception) -> None:
    log.warning(
        "unavailable.503 %s %s: %s: %s",
        request.method,
        request.path,
        type(exception).__name__,
        str(exception).strip().splitlines()[0] if str(exception).strip() else "",
    )


got_request_exception.connect(_note_unreachable, dispatch_uid="attest-outage")
