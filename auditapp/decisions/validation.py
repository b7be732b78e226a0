"""Checking submitted decisions before anything is stored.

The envelope (model, version, request_id, timestamps, ...) is checked here;
the inputs, prediction and score are checked by the version's schema
(registry/schema.py), the one place that defines valid values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from auditapp.registry.models import ModelVersion

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
MAX_ID_LENGTH = 200
# Clocks drift; a prediction from further in the future than this is a bug.
FUTURE_TOLERANCE = timedelta(minutes=5)


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


def parse_timestamp(value: Any) -> tuple[datetime | None, str | None]:
    if not isinstance(value, str):
        return None, f"must be an ISO-8601 string, got {value!r}"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None, f"{value!r} is not an ISO-8601 timestamp"
    if moment.tzinfo is None:
        return None, f"{value!r} has no time zone (add Z or +00:00)"
    return moment, None


def _envelope_errors(item: dict, now: datetime) -> list[tuple[str, str]]:
    errors = [(name, "is required") for name in REQUIRED if name not in item]
    errors += [(name, "is not a decision field") for name in item if name not in FIELDS]
    request_id = item.get("request_id")
    if "request_id" in item and (
        not isinstance(request_id, str) or not request_id or len(request_id) > MAX_ID_LENGTH
    ):
        errors.append(("request_id", f"must be a non-empty string of at most {MAX_ID_LENGTH}"))
    subject_ref = item.get("subject_ref")
    if subject_ref is not None and (
        not isinstance(subject_ref, str) or len(subject_ref) > MAX_ID_LENGTH
    ):
        errors.append(("subject_ref", f"must be a string of at most {MAX_ID_LENGTH} or null"))
    if not isinstance(item.get("metadata", {}), dict):
        errors.append(("metadata", "must be an object"))
    elif not _json_is_finite(item.get("metadata", {})):
        errors.append(("metadata", "must not contain NaN, Infinity or integers beyond 64 bits"))
    if "predicted_at" in item:
        moment, error = parse_timestamp(item["predicted_at"])
        if error:
            errors.append(("predicted_at", error))
        elif moment > now + FUTURE_TOLERANCE:
            errors.append(("predicted_at", f"{item['predicted_at']} is in the future"))
    return errors


def _json_is_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, dict):
        return all(_json_is_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_json_is_finite(v) for v in value)
    return True


def version_key(item: dict) -> tuple[str, str] | None:
    model, version = item.get("model"), item.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if isinstance(model, str) and isinstance(version, str):
        return model, version
    return None


def check_decisions(
    items: list[Any],
    versions: dict[tuple[str, str], ModelVersion],
    now: datetime,
) -> tuple[list[CheckedDecision], list[dict]]:
    """Check every item; return the good ones and, per bad item, its index and reasons."""
    checked: list[CheckedDecision] = []
    invalid: list[dict] = []
    first_index: dict[tuple[str, str], int] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            invalid.append(
                {"index": index, "errors": [{"field": "", "message": "must be an object"}]}
            )
            continue
        errors = _envelope_errors(item, now)
        key = version_key(item)
        model_version = versions.get(key) if key else None
        if "model" in item and "version" in item and model_version is None:
            errors.append(
                ("version", f"unknown model or version {item['model']!r} / {item['version']!r}")
            )
        if model_version is not None:
            schema = model_version.parsed_schema  # cached on the instance
            if "inputs" in item:
                errors += schema.input_errors(item["inputs"])
            if "prediction" in item:
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
                prediction=item["prediction"],
                score=float(score) if score is not None else None,
                predicted_at=parse_timestamp(item["predicted_at"])[0],
                subject_ref=item.get("subject_ref"),
                metadata=item.get("metadata", {}),
            )
        )
    return checked, invalid
