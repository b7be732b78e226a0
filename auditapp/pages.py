"""Shared helpers for page views: service errors as pages, query strings."""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable, Sequence
from urllib.parse import urlencode

from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render

from auditapp.csvcells import safe_row
from auditapp.errors import NotFound, ServiceError


def page(view):
    """Page views raise the same service errors as the API; here they become pages."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from None
        except ServiceError as exc:  # bad input (400), a conflict (409), ...
            context = {"status": exc.status, "message": exc.message, "details": exc.details}
            return render(request, "web/error.html", context, status=exc.status)

    return wrapper


def query_string(params, **changes) -> str:
    """The current query string with some parameters replaced (None drops one)."""
    merged = {k: v for k, v in params.items() if v not in ("", None)}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return urlencode(merged)


def is_htmx(request) -> bool:
    """An htmx request wants the fragment it targets, not the whole page."""
    return request.headers.get("HX-Request") == "true"


class _Echo:
    """A file-like object whose write returns the line: csv.writer as a generator."""

    def write(self, value):
        return value


def csv_response(filename: str, header: Sequence[str], rows: Iterable[Sequence]):
    """Stream rows as a CSV download without holding them all in memory.

    Every cell goes through safe_cell (no spreadsheet formulas). Rows are read
    while streaming: a view checks its query first (see dossier.views.export_csv).
    """

    def lines():
        writer = csv.writer(_Echo())
        yield writer.writerow(safe_row(header))
        for row in rows:
            yield writer.writerow(safe_row(row))

    response = StreamingHttpResponse(lines(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
