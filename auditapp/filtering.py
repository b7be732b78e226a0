"""Filter fields that refuse what the database cannot compare, shared by every search."""

from __future__ import annotations

import re
from datetime import UTC

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

from auditapp.errors import InvalidInput

DEFAULT_LIMIT = 50  # rows per page of a search, unless ?limit= says otherwise
MAX_LIMIT = 500


class FloatFilter(django_filters.NumberFilter):
    """A score is a float: NaN, Infinity and 1e400 are not numbers it can be compared with."""

    field_class = forms.FloatField


class MomentField(IsoDateTimeField):
    """An ISO-8601 moment that has a UTC equivalent (year 1 at +01:00 has none)."""

    def clean(self, value):
        moment = super().clean(value)
        if moment is not None:
            try:
                moment.astimezone(UTC)
            except OverflowError:
                raise forms.ValidationError("is outside the range of dates") from None
        return moment


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


def parse_limit(raw: str | None) -> int:
    if raw in (None, ""):
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}.") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}.")
    return limit
