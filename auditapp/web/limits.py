"""Request limits that hold for every endpoint: body size, NUL in URLs and form fields.

Each refusal is a 4xx that names what was wrong (the JSON error shape under /api/,
plain text on pages), not a 500 from the database or Django's HTML 400.
JSON bodies are checked by auditapp.web.parsers.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponse, JsonResponse

from auditapp.textcheck import format_path, text_problem
from auditapp.web.api_errors import error_body


def _mib(size: int) -> str:
    return f"{size:,} bytes" + (f" ({size / 2**20:g} MiB)" if size >= 2**20 else "")


def _refusal(request, status: int, code: str, message: str, details=None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(code, message, details), status=status)
    lines = [message, *(f"{k}: {'; '.join(v)}" for k, v in (details or {}).items())]
    return HttpResponse("\n".join(lines), status=status, content_type="text/plain")


def _too_large(request) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return _refusal(
        request,
        413,
        "too_large",
        f"The request body is larger than the {_mib(limit)} accepted; split it.",
    )


class InputLimitsMiddleware:
    """Body size before the body is read; NUL in the path, query or form fields.

    A multipart body is left to Django's own count, which leaves out uploaded
    files (a model artifact may be larger than any JSON request).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        multipart = request.content_type == "multipart/form-data"
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length > limit and not multipart:
            return _too_large(request)
        try:
            problems = self._url_problems(request)
            if not problems and request.content_type == "application/x-www-form-urlencoded":
                problems = _text_problems(request.POST)
        except RequestDataTooBig:
            return _too_large(request)
        except (TooManyFieldsSent, TooManyFilesSent) as exc:
            return _refusal(request, 400, "too_many_fields", str(exc))
        if problems:
            return _refusal(
                request, 400, "invalid_parameters", "Some parameters are invalid.", problems
            )
        return self.get_response(request)

    def process_exception(self, request, exception):
        """Limits Django checks while a view parses its body (multipart fields, field counts)."""
        if isinstance(exception, RequestDataTooBig):
            return _too_large(request)
        if isinstance(exception, TooManyFieldsSent | TooManyFilesSent):
            return _refusal(request, 400, "too_many_fields", str(exception))
        return None

    @staticmethod
    def _url_problems(request) -> dict[str, list[str]]:
        if reason := text_problem(request.path):
            return {"path": [reason]}
        return _text_problems(request.GET)


def _text_problems(params) -> dict[str, list[str]]:
    problems = {}
    for key, values in params.lists():
        for text in (key, *values):
            if reason := text_problem(text):
                problems[format_path([key])] = [reason]
    return problems
