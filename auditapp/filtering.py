"""Filter fields that refuse what the database cannot compare, and the checks every search
and listing applies to its query parameters."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.utils.dateparse import parse_datetime
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

from auditapp.errors import InvalidInput
from auditapp.textcheck import refuse_repeated

# The types of the query parameters searches share, as their OpenAPI operations declare
# them: clients, and the API fuzzers, then send what they mean (a moment, a number).
PARAMETER_TYPES = {
    "from": OpenApiTypes.DATETIME,
    "to": OpenApiTypes.DATETIME,
    "score_min": OpenApiTypes.NUMBER,
    "score_max": OpenApiTypes.NUMBER,
    "limit": OpenApiTypes.INT,
}
DEFAULT_LIMIT = 50  # rows per page of a search, unless ?limit= says otherwise
MAX_LIMIT = 500


class FloatFilter(django_filters.NumberFilter):
    """A score is a float: NaN, Infinity and 1e400 are not numbers it can be compared with."""

    field_class = forms.FloatField


def in_utc(moment: datetime) -> datetime | None:
    """An aware moment from a client, in UTC; None when UTC cannot hold it (year 1 east of
    Greenwich, year 9999 west of it). ISO-8601 allows offsets PostgreSQL refuses (+18:04):
    a client's moment is converted before it reaches the database."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


def parse_moment_text(value: Any) -> datetime | None:
    """An ISO-8601 date-time from a JSON body, or None when it is not one: not text,
    malformed, or shaped as one but impossible (month 13, hour 24, an offset of 25 hours),
    which Django's parser raises ValueError for (a 500 where it was not caught)."""
    if not isinstance(value, str):
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        return None


class MomentField(IsoDateTimeField):
    """An ISO-8601 moment that has a UTC equivalent (year 1 at +01:00 has none), in UTC."""

    def clean(self, value):
        moment = super().clean(value)
        if moment is None:
            return None
        utc = in_utc(moment)  # an offset PostgreSQL refuses (+18:04) is read in UTC
        if utc is None:
            raise forms.ValidationError("is outside the range of dates")
        return utc


class MomentFilter(django_filters.IsoDateTimeFilter):
    field_class = MomentField


CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def refuse_control_characters(params) -> None:
    """NUL and other control characters in a query are never a search; name the parameter."""
    bad = sorted(
        key
        for key in params
        if CONTROL.search(key) or any(CONTROL.search(v) for v in params.getlist(key))
    )
    if bad:
        raise InvalidInput(
            "Search parameters may not contain control characters.",
            code="invalid_parameters",
            details={key: ["contains a control character (such as NUL)"] for key in bad},
        )


def parse_limit(raw: str | None, default: int = DEFAULT_LIMIT) -> int:
    if raw in (None, ""):
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidInput.named("limit", f"must be an integer from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput.named("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return limit


def refuse_empty_period(start: datetime | None, end: datetime | None) -> None:
    """A period whose `from` is not before its `to` (which it excludes) is a mistake, refused
    naming `from`: answered with nothing, it reads as "nothing happened then"."""
    if start is not None and end is not None and start >= end:
        raise InvalidInput.named(
            "from", "must be before to (to is excluded)", code="invalid_parameters"
        )


def paging_parameters(default: int = DEFAULT_LIMIT) -> list[OpenApiParameter]:
    """The OpenAPI parameters of a list paged by newest_first_page."""
    return [
        OpenApiParameter("cursor", OpenApiTypes.STR, description="the `next` of the previous page"),
        OpenApiParameter(
            "limit", OpenApiTypes.INT, description=f"page size, 1-{MAX_LIMIT} (default {default})"
        ),
    ]


def newest_first_page(queryset, params, *, default: int = DEFAULT_LIMIT) -> tuple[list, str | None]:
    """A page of `queryset`, newest first by id, and the `next` cursor (None on the last):
    ?limit= rows (1 to MAX_LIMIT, `default` without it) after ?cursor=, the last id the
    previous page showed. Ids only grow, so a row added while a client pages is never shown
    twice nor makes it skip one; every API list pages this way, none is cut unsaid."""
    cursor = params.get("cursor")
    limit = parse_limit(params.get("limit"), default)
    queryset = queryset.order_by("-id")
    if cursor:
        if not (cursor.isascii() and cursor.isdigit() and 0 < int(cursor) < 2**63):
            raise InvalidInput.named(
                "cursor", "must be the `next` value of the previous page", code="invalid_parameters"
            )
        queryset = queryset.filter(id__lt=int(cursor))
    rows = list(queryset[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], str(rows[limit - 1].pk)


def refuse_more_rows_than(queryset, limit: int, what: str) -> None:
    """An export holds every row asked for or none: more than `limit` rows is a 400 naming
    the cap (`too_many_rows`), not a file cut at it that reads as complete."""
    if queryset[limit : limit + 1].exists():
        raise InvalidInput(
            f"The {what} has more than {limit:,} rows, more than one export holds; "
            "narrow it (a shorter period, one model) and export each part.",
            code="too_many_rows",
        )


def refuse_unknown_parameters(params, known: Iterable[str]) -> None:
    """400 naming every query parameter not in `known`: a misspelt filter (scor_min, stat)
    would otherwise be ignored, and the answer read as if it had applied. A known name
    with a placeholder, "feature.<name>", admits every name after "feature.". Then 400
    naming any parameter given more than once."""
    known = sorted(set(known))
    exact = {name for name in known if "<" not in name}
    prefixes = tuple(name.split("<", 1)[0] for name in known if "<" in name)
    takes = f"takes {', '.join(known)}" if known else "takes no query parameters"
    _refuse_unknown(
        [key for key in params if not (key in exact or (prefixes and key.startswith(prefixes)))],
        "Unknown query parameters: {}.",
        f"not a parameter of this request; it {takes}",
        code="invalid_parameters",
    )
    # ?score_min=0.99&score_min=0 had listed every score, the URL showing both.
    refuse_repeated(params, "Query parameters", "invalid_parameters")


def refuse_unknown_fields(data: Any, known: Iterable[str], what: str) -> None:
    """400 naming every field of a JSON body not in `known`, before anything is done: a
    misspelt field is otherwise ignored, and its default taken as what was meant (a
    "dryrun" ran for real; a "subjet_ref" held a whole model). A body that is not an object
    is left to the caller, which says what shape it wants."""
    if not isinstance(data, dict):
        return
    known = sorted(set(known))
    takes = f"it takes {', '.join(known)}" if known else "it takes no body"
    _refuse_unknown(
        [str(key) for key in data if key not in known],
        f"Unknown {what} fields: {{}}; nothing was done.",
        f"is not a {what} field; {takes}",
    )


def _refuse_unknown(unknown: list[str], message: str, detail: str, **kwargs: Any) -> None:
    """The one refusal of names a request does not take: each named in `details`."""
    if unknown:
        unknown = sorted(unknown)
        raise InvalidInput(
            message.format(", ".join(unknown)),
            details={key: [detail] for key in unknown},
            **kwargs,
        )


def takes_parameters(parameters: Iterable[Any]) -> Callable:
    """An API view's get() that answers only the query parameters its schema declares
    (`parameters`: the OpenApiParameter list given to extend_schema, so the documentation
    and the check are one list); any other is refused by name (refuse_unknown_parameters).
    Put it under @extend_schema."""
    names = [parameter.name for parameter in parameters]

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def checked(view, request, *args, **kwargs):
            refuse_unknown_parameters(request.query_params, names)
            return method(view, request, *args, **kwargs)

        return checked

    return decorate
