"""Checking submitted decisions before anything is stored.

The envelope (model, version, request_id, timestamps, ...) is checked here;
the inputs, prediction and score are checked by the version's schema
(explain/schema.py), the one place that defines valid values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings

from auditapp.registry.models import ModelVersion
from auditapp.textcheck import count_keys, format_path, identifier_problem, json_problem

FIELDS = frozenset(
    {
        "model",
        "version",
        "request_id",
        "inputs",
        "prediction",
        "score",
        "predicted_at",
        "subject_ref",
        "metadata",
    }
)
REQUIRED = ("model", "version", "request_id", "inputs", "prediction", "predicted_at")
# What the server itself decides when it serves the prediction (serving/): not sent.
PREDICTED = ("prediction", "score", "predicted_at")
MAX_ID_LENGTH = 200


@dataclass
class CheckedDecision:
    """A decision that passed every check, ready to be stored."""

    index: int
    model_version: ModelVersion
    request_id: str
    inputs: dict
    prediction: Any
    score: float | None
    predicted_at: datetime
    subject_ref: str | None
    metadata: dict
    arm: str | None = None  # served by the app itself (decisions.models.ARMS)
    served_by: int | None = None  # a shadow decision: the served decision's id


def parse_timestamp(value: Any) -> tuple[datetime | None, str | None]:
    """An aware datetime in UTC, or the reason why not.

    A moment that UTC cannot hold (year 1 east of Greenwich, year 9999 west of
    it) comes back as the earliest or latest datetime, for the window to refuse.
    """
    if not isinstance(value, str):
        return None, f"must be an ISO-8601 string, got {value!r}"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None, f"{value!r} is not an ISO-8601 timestamp"
    if moment.tzinfo is None:
        return None, f"{value!r} has no time zone (add Z or +00:00)"
    try:
        return moment.astimezone(UTC), None
    except OverflowError:
        earliest, latest = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
        return (earliest if moment.year < 5000 else latest), None


@dataclass(frozen=True)
class Window:
    """The moments a timestamp may name: ATTEST_PREDICTED_AT_MAX_AGE_DAYS before the
    server's clock, ATTEST_PREDICTED_AT_MAX_AHEAD_MINUTES after it. Read once per batch:
    the settings cost a lookup each, and a batch has thousands of timestamps."""

    age: int
    ahead: int
    earliest: datetime
    latest: datetime

    @classmethod
    def around(cls, now: datetime) -> Window:
        age = settings.ATTEST_PREDICTED_AT_MAX_AGE_DAYS
        ahead = settings.ATTEST_PREDICTED_AT_MAX_AHEAD_MINUTES
        return cls(age, ahead, now - timedelta(days=age), now + timedelta(minutes=ahead))


def window_error(value: str, moment: datetime, window: Window) -> str | None:
    """Why a moment is too far from the server's clock to be a real one, or None.

    The window allows for clock drift and late batches; year 1 or a prediction a week
    ahead is a bug in the sender.
    """
    if moment < window.earliest:
        return f"{value} is more than {window.age} days before the server's clock"
    if moment > window.latest:
        return (
            f"{value} is in the future: more than {window.ahead} minutes after the server's clock"
        )
    return None


def timestamp_error(value: Any, window: Window) -> str | None:
    moment, error = parse_timestamp(value)
    return error or window_error(value, moment, window)


def _identifier_error(value: Any, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        if required:
            return f"must be a non-empty string of at most {MAX_ID_LENGTH}"
        return f"must be a string of at most {MAX_ID_LENGTH} or null"
    return identifier_problem(value)


def metadata_errors(metadata: Any) -> list[tuple[str, str]]:
    """Metadata is a small JSON object: limited depth, key count and size (settings)."""
    if not isinstance(metadata, dict):
        return [("metadata", "must be an object")]
    if not metadata:  # most decisions carry none: within every limit
        return []
    depth = settings.ATTEST_METADATA_MAX_DEPTH
    if problem := json_problem(metadata, max_depth=depth):
        path, reason = problem
        return [(format_path(("metadata", *path)), reason)]
    keys, max_keys = count_keys(metadata), settings.ATTEST_METADATA_MAX_KEYS
    if keys > max_keys:
        return [("metadata", f"has {keys} keys; at most {max_keys:,} are accepted")]
    size, max_size = len(orjson.dumps(metadata)), settings.ATTEST_METADATA_MAX_BYTES
    if size > max_size:
        return [("metadata", f"is {size:,} bytes of JSON; at most {max_size:,} are accepted")]
    return []


def _envelope_errors(item: dict, window: Window, served: bool) -> list[tuple[str, str]]:
    required = [name for name in REQUIRED if not (served and name in PREDICTED)]
    errors = [(name, "is required") for name in required if name not in item]
    if served:
        errors += [(name, "is the model's to give, not sent") for name in PREDICTED if name in item]
    errors += [(name, "is not a decision field") for name in item if name not in FIELDS]
    if "request_id" in item and (reason := _identifier_error(item["request_id"], required=True)):
        errors.append(("request_id", reason))
    if reason := _identifier_error(item.get("subject_ref"), required=False):
        errors.append(("subject_ref", reason))
    if "model" in item and not isinstance(item["model"], str):
        errors.append(("model", f"must be a string (a model name), got {item['model']!r}"))
    version = item.get("version")
    if "version" in item and not isinstance(version, str):
        number = isinstance(version, int | float) and not isinstance(version, bool)
        shown = f"the number {version}" if number else repr(version)
        errors.append(("version", f'must be a string such as "1", got {shown}'))
    errors += metadata_errors(item.get("metadata", {}))
    if "predicted_at" in item and (reason := timestamp_error(item["predicted_at"], window)):
        errors.append(("predicted_at", reason))
    return errors


def version_key(item: dict) -> tuple[str, str] | None:
    model, version = item.get("model"), item.get("version")
    if isinstance(model, str) and isinstance(version, str):
        return model, version
    return None


def check_decisions(
    items: list[Any],
    versions: dict[tuple[str, str], ModelVersion],
    now: datetime,
    *,
    served: bool = False,
) -> tuple[list[CheckedDecision], list[dict]]:
    """Check every item; return the good ones and, per bad item, its index and reasons.

    `served`: the app predicts them itself (serving/), so the items carry no prediction,
    score or predicted_at (the checked ones come back with none, and `now` as their time,
    for the caller to fill in once the model has answered).
    """
    checked: list[CheckedDecision] = []
    invalid: list[dict] = []
    first_index: dict[tuple[str, str], int] = {}
    window = Window.around(now)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            invalid.append(
                {"index": index, "errors": [{"field": "", "message": "must be an object"}]}
            )
            continue
        errors = _envelope_errors(item, window, served)
        key = version_key(item)
        model_version = versions.get(key) if key else None
        if key and model_version is None:
            errors.append(
                ("version", f"unknown model or version {item['model']!r} / {item['version']!r}")
            )
        if model_version is not None:
            schema = model_version.parsed_schema  # cached on the instance
            if "inputs" in item:
                errors += schema.input_errors(item["inputs"])
            if "prediction" in item and not served:
                errors += schema.target.prediction_errors(item["prediction"], item.get("score"))
            repeat = (item["model"], item.get("request_id"))
            if isinstance(repeat[1], str) and first_index.setdefault(repeat, index) != index:
                errors.append(("request_id", f"repeats item {first_index[repeat]} of this batch"))
        if errors:
            invalid.append(
                {
                    "index": index,
                    "request_id": item.get("request_id"),
                    "errors": [{"field": field, "message": message} for field, message in errors],
                }
            )
            continue
        score = item.get("score")
        checked.append(
            CheckedDecision(
                index=index,
                model_version=model_version,
                request_id=item["request_id"],
                inputs=item["inputs"],
                prediction=item.get("prediction"),
                score=float(score) if score is not None else None,
                predicted_at=now if served else parse_timestamp(item["predicted_at"])[0],
                subject_ref=item.get("subject_ref"),
                metadata=item.get("metadata", {}),
            )
        )
    return checked, invalid
