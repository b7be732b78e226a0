"""The content hash of a decision: sha256 over a canonical JSON of its recorded fields.

Canonical JSON here is: keys sorted, no whitespace, UTF-8, numbers as Python
writes them (shortest round-trip form), timestamps as UTC ISO-8601 with
microseconds. Anyone can recompute it from an exported decision.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

HASHED_FIELDS = (
    "model",
    "version",
    "artifact_sha256",
    "request_id",
    "subject_ref",
    "inputs",
    "prediction",
    "score",
    "predicted_at",
    "recorded_at",
    "source",
    "metadata",
)


def canonical_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _encode_time(value: Any) -> str:
    if isinstance(value, datetime):
        return canonical_time(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_json(value: Any) -> str:
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_encode_time,
    )


def content_hash(fields: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of HASHED_FIELDS taken from `fields`."""
    document = {name: fields[name] for name in HASHED_FIELDS}
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()
