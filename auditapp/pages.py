"""Shared helpers for page views: service errors as pages, query strings, pagers."""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render

from auditapp.csvcells import safe_row
from auditapp.errors import Forbidden, InvalidInput, NotFound, ServiceError
from auditapp.filtering import parse_limit, refuse_unknown_parameters
from auditapp.textcheck import refuse_repeated


def page(view):
    """Page views raise the same service errors as the API; here they become pages.

    A form field given twice is refused by name (as the API's parsers do), unless the
    view takes several of it (takes_lists)."""
    several = getattr(view, "form_lists", frozenset())

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            if request.method == "POST":
                refuse_repeated(request.POST, "Form fields", "invalid_parameters", several)
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from None
        except Forbidden as exc:  # a refusal: the 403 page, audited as every refusal
            raise PermissionDenied(exc.message) from None
        except ServiceError as exc:  # bad input (400), a conflict (409), ...
            return error_page(request, exc.status, exc.message, exc.details)

    return wrapper


def error_page(request, status: int, message: str, details=None):
    """The error page, or for htmx its fragment alone, in place of what was asked for
    (base.html swaps it): left alone, the target kept showing an earlier answer."""
    context = {"status": status, "message": message, "details": details}
    if is_htmx(request):
        return render(request, "web/_error.html", {**context, "fragment": True}, status=status)
    return render(request, "web/error.html", context, status=status)


def takes_lists(*names: str):
    """A page view whose form gives each of `names` several times (ticked boxes); @page
    refuses any other field given twice. Put it under @page."""

    def decorate(view):
        view.form_lists = frozenset(names)
        return view

    return decorate


def takes_query(*names: str):
    """A page view that answers only the query parameters it names: a misspelt filter,
    order or page (?shwo=resolved) is refused by name, not ignored and the page read as
    if it had applied. Put it under @page, which shows the refusal."""

    def decorate(view):
        @functools.wraps(view)
        def checked(request, *args, **kwargs):
            refuse_unknown_parameters(request.GET, names)
            return view(request, *args, **kwargs)

        return checked

    return decorate


def query_string(params, **changes) -> str:
    """The current query string with some parameters replaced (None drops one)."""
    merged = {k: v for k, v in params.items() if v not in ("", None)}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return urlencode(merged)


DEFAULT_PER_PAGE = 50  # rows per page of a list, unless a view or ?limit= says otherwise
# A list counts its matches up to here, and pages through these only: counting every
# match, and reading every row before a deep page (OFFSET), grow with the table (the
# access log at 5M events: 0.16-0.23 s a page, 0.7 s deep in it). Past it the page
# says "more than" and how to reach the rest: narrower filters, or the API's cursor.
COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class Pager:
    """One page of a list: its rows, where they sit in the whole, and links to the others.

    Every list page shows "first to last of total" and these links (the component
    templates/components/pager.html), so no list is ever cut without saying so.
    The links keep every other query parameter: filters and sorting survive paging.
    """

    rows: list
    total: int
    number: int
    per_page: int
    params: Any  # the request's query (a QueryDict, or a plain dict)
    param: str = "page"
    more: bool = False  # more rows match than COUNT_LIMIT: `total` is the cap

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def first(self) -> int:
        return (self.number - 1) * self.per_page + 1 if self.rows else 0

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1 if self.rows else 0

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages

    def query(self, number: int) -> str:
        """The query string of page `number`, every other parameter as it is."""
        lists = (
            self.params.lists()
            if hasattr(self.params, "lists")
            else ((key, [value]) for key, value in self.params.items())
        )
        pairs = [
            (key, value)
            for key, values in lists
            if key != self.param
            for value in values
            if value not in ("", None)
        ]
        if number > 1:
            pairs.append((self.param, str(number)))
        return urlencode(pairs)

    @property
    def first_query(self) -> str:
        return self.query(1)

    @property
    def previous_query(self) -> str:
        return self.query(self.number - 1)

    @property
    def next_query(self) -> str:
        return self.query(self.number + 1)

    @property
    def last_query(self) -> str:
        return self.query(self.pages)


def count_up_to_limit(rows) -> tuple[int, bool]:
    """(the rows of a QuerySet counted up to COUNT_LIMIT, whether more match)."""
    total = rows[: COUNT_LIMIT + 1].count()
    return min(total, COUNT_LIMIT), total > COUNT_LIMIT


def paginate(rows, params, *, per_page: int | None = None, param: str = "page") -> Pager:
    """Page `rows` (a QuerySet, counted in the database, or a list) by ?page= and ?limit=.

    ?limit= (1 to 500) overrides the view's page size; a page past the last shows the
    last one (a link kept from a longer list still lands somewhere); a page that is
    not a whole number from 1 is refused, naming the parameter. A QuerySet is counted,
    and paged, up to COUNT_LIMIT rows.
    """
    raw_limit = params.get("limit")
    size = parse_limit(raw_limit) if raw_limit not in (None, "") else per_page or DEFAULT_PER_PAGE
    raw = params.get(param) or "1"
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if number < 1:
        raise InvalidInput(
            f"{param} must be a whole number from 1.",
            code="invalid_parameters",
            details={param: ["must be a whole number from 1"]},
        )
    total, more = (len(rows), False) if isinstance(rows, list) else count_up_to_limit(rows)
    number = min(number, max(1, math.ceil(total / size)))
    start = (number - 1) * size
    end = min(start + size, total)
    return Pager(list(rows[start:end]), total, number, size, params, param, more)


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
