"""Monitoring windows: the hour, day or week a moment falls in, and a requested period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from auditapp.errors import InvalidInput
from auditapp.filtering import in_utc, parse_moment_text
from auditapp.monitoring.models import CUSTOM, DAY, HOUR, WEEK

WINDOW_LENGTH = {HOUR: timedelta(hours=1), DAY: timedelta(days=1), WEEK: timedelta(weeks=1)}
MAX_PERIOD = timedelta(days=366)


def window_floor(kind: str, moment: datetime) -> datetime:
    """The start (UTC) of the hour, day or week (from Monday) that contains `moment`."""
    moment = moment.astimezone(UTC)
    if kind == HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if kind == DAY else day - timedelta(days=day.weekday())


def split_period(
    kind: str, start: datetime, end: datetime
) -> list[tuple[datetime, datetime, bool]]:
    """[start, end) cut at the hour, day or week boundaries: (window start, window end,
    partial) in order, the first and last clipped to the period (partial) when it does
    not begin or end on a boundary."""
    length = WINDOW_LENGTH[kind]
    windows = []
    floor = window_floor(kind, start)
    while floor < end:
        low, high = max(floor, start), min(floor + length, end)
        windows.append((low, high, (low, high) != (floor, floor + length)))
        floor += length
    return windows


def window_kind(start: datetime, end: datetime) -> str:
    """hour / day / week when [start, end) is exactly one such window, else custom."""
    for kind, length in WINDOW_LENGTH.items():
        if end - start == length and window_floor(kind, start) == start:
            return kind
    return CUSTOM


def parse_moment(value: Any, field: str) -> datetime:
    moment = parse_moment_text(value)
    if moment is None:
        raise InvalidInput(f"{field} must be an ISO-8601 date-time, e.g. 2026-11-20T00:00:00Z.")
    if timezone.is_naive(moment):
        raise InvalidInput(f"{field} must carry a time zone (e.g. Z for UTC).")
    if (utc := in_utc(moment)) is None:
        raise InvalidInput(f"{field} is outside the years 1 to 9999 in UTC.")
    return utc


def parse_period(data: Any) -> tuple[datetime, datetime]:
    """`{"from", "to"}` of a request: time-zone aware, in order, at most a year apart."""
    if not isinstance(data, dict):
        raise InvalidInput('The body must be an object: {"from": ..., "to": ...}.')
    start, end = parse_moment(data.get("from"), "from"), parse_moment(data.get("to"), "to")
    if end <= start:
        raise InvalidInput.named("to", "must be after from")
    if end - start > MAX_PERIOD:
        raise InvalidInput("A monitoring window spans at most 366 days.")
    return start, end
