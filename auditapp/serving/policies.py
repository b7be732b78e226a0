"""A model's traffic policy: its document checked, the revision in force, and each request's arm.

The document is what the API shows and takes:

    {"production": "3", "canary": {"version": "4", "share": 0.1}, "shadow": ["5"],
     "enabled": true, "fallback": "2"}

- `production` answers every request the canary does not take.
- `canary` answers a share of the subjects: a subject's place in [0, 1) is the sha256
  of the model's name and its `subject_ref` (else the `request_id`), so the split is
  deterministic and sticky (one subject never flips while the share stays).
- `shadow` versions score the same inputs after the answer was sent (a task), never
  answer; their decisions are recorded with arm `shadow`, linked to the served one.
- `enabled: false` turns the policy off: `fallback` answers everything (arm `fallback`,
  no canary, no shadow), or, without one, predictions are refused with 503.

A model without a policy serves its newest version in the `production` stage.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from auditapp.decisions.models import CANARY, FALLBACK, PRODUCTION
from auditapp.errors import InvalidInput
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.serving.models import TrafficPolicy

FIELDS = ("production", "canary", "shadow", "enabled", "fallback")
# What GET adds to the document: a client may PUT back what it read.
READ_ONLY = frozenset(
    {"model", "revision", "action", "changed", "changed_by", "changed_at", "rolled_back"}
)
CANARY_FIELDS = frozenset({"version", "share"})
MAX_SHADOWS = 5  # each scores every served request again, on a worker


@dataclass(frozen=True)
class Routing:
    """A policy revision with its versions loaded: what one request is served by."""

    revision: int | None  # None: no policy, the production stage's version
    production: ModelVersion | None
    canary: ModelVersion | None
    share: float
    shadow: tuple[ModelVersion, ...]
    enabled: bool
    fallback: ModelVersion | None

    def versions(self) -> list[ModelVersion]:
        named = [self.production, self.canary, self.fallback, *self.shadow]
        return [v for v in named if v is not None]

    def arm_for(self, key: str, model_name: str) -> tuple[str, ModelVersion | None]:
        """The arm and version that answer a subject (None: nothing may answer)."""
        if not self.enabled:
            return FALLBACK, self.fallback
        if self.canary is not None and place(model_name, key) < self.share:
            return CANARY, self.canary
        return PRODUCTION, self.production

    def shadows(self) -> tuple[ModelVersion, ...]:
        return self.shadow if self.enabled else ()


def place(model_name: str, key: str) -> float:
    """A subject's place in [0, 1): the first 8 bytes of sha256("<model>\\n<key>")."""
    digest = hashlib.sha256(f"{model_name}\n{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def current_policy(model: RegisteredModel) -> TrafficPolicy | None:
    """The revision in force: the newest row (one indexed read)."""
    return (
        TrafficPolicy.objects.filter(registered_model=model)
        .select_related("changed_by")
        .order_by("-id")
        .first()
    )


# Revisions are append-only and versions immutable: a process keeps what it loaded. The
# time is in the key too: an id alone may come back where rows are rolled back (tests).
_routings: dict[tuple[int, int, str], Routing] = {}
ROUTING_CACHE_SIZE = 256


def routing_for(model: RegisteredModel, policy: TrafficPolicy | None) -> Routing:
    """The policy's versions, loaded once per process and revision."""
    if policy is None:
        newest = (
            model.versions.filter(stage=ModelVersion.PRODUCTION)
            .select_related("registered_model")
            .order_by("-created_at", "-id")
            .first()
        )
        return Routing(None, newest, None, 0.0, (), True, None)
    key = (model.pk, policy.pk, policy.changed_at.isoformat())
    if key not in _routings:
        if len(_routings) > ROUTING_CACHE_SIZE:
            _routings.clear()
        _routings[key] = _load_routing(model, policy)
    return _routings[key]


def _load_routing(model: RegisteredModel, policy: TrafficPolicy) -> Routing:
    document = policy.document
    versions = {
        v.version: v
        for v in model.versions.select_related("registered_model").filter(
            version__in=named_versions(document)
        )
    }
    canary = document.get("canary")
    return Routing(
        revision=policy.pk,
        production=versions.get(document["production"]),
        canary=versions.get(canary["version"]) if canary else None,
        share=float(canary["share"]) if canary else 0.0,
        shadow=tuple(versions[v] for v in document.get("shadow", []) if v in versions),
        enabled=bool(document.get("enabled", True)),
        fallback=versions.get(document.get("fallback")) if document.get("fallback") else None,
    )


def named_versions(document: dict) -> set[str]:
    canary = document.get("canary") or {}
    named = {document.get("production"), canary.get("version"), document.get("fallback")}
    return {v for v in named | set(document.get("shadow", [])) if v is not None}


def implied_document(routing: Routing) -> dict:
    """What a model without a policy serves by, in the policy's shape."""
    production = routing.production.version if routing.production else None
    return {"production": production, "canary": None, "shadow": [], "enabled": True}


# --- checking a document -------------------------------------------------------------


def parse_policy(model: RegisteredModel, payload: Any) -> dict:
    """The policy a client sent, checked against the model's versions, as stored.

    Raises InvalidInput listing every problem as {"field", "message"}.
    """
    if not isinstance(payload, dict):
        raise InvalidInput(
            'The body must be a policy object: {"production": "<version>", ...}.',
            code="invalid_policy",
        )
    errors: list[tuple[str, str]] = [
        (str(name), "is not a traffic policy field")
        for name in payload
        if name not in FIELDS and name not in READ_ONLY
    ]
    versions = {
        v.version: v
        for v in model.versions.filter(version__in=_strings(payload)).only("version", "stage")
    }
    document: dict[str, Any] = {
        "production": _version(payload, "production", versions, errors, required=True),
        "canary": _canary(payload.get("canary"), versions, errors),
        "shadow": _shadow(payload.get("shadow", []), versions, errors),
        "enabled": _enabled(payload.get("enabled", True), errors),
        "fallback": _version(payload, "fallback", versions, errors, required=False),
    }
    errors += _overlaps(document)
    if errors:
        raise InvalidInput(
            f"The traffic policy is invalid ({len(errors)} problem"
            f"{'s' if len(errors) > 1 else ''}); nothing was changed.",
            code="invalid_policy",
            details=[{"field": field, "message": message} for field, message in errors],
        )
    return document


def _strings(payload: dict) -> set[str]:
    """Every string the payload names as a version (looked up in one query)."""
    found = {payload.get("production"), payload.get("fallback")}
    if isinstance(payload.get("canary"), dict):
        found.add(payload["canary"].get("version"))
    if isinstance(payload.get("shadow"), list):
        found.update(payload["shadow"])
    return {v for v in found if isinstance(v, str)}


def _version_error(value: Any, versions: dict[str, ModelVersion]) -> str | None:
    if not isinstance(value, str):
        return f'must be a version name such as "3", got {value!r}'
    if value not in versions:
        return f"no version {value!r} of this model"
    if versions[value].stage == ModelVersion.ARCHIVED:
        return f"version {value} is archived: move it to staging or production first"
    return None


def _version(payload: dict, field: str, versions, errors, *, required: bool) -> str | None:
    value = payload.get(field)
    if value is None:
        if required:
            errors.append((field, "is required: the version that answers"))
        return None
    if problem := _version_error(value, versions):
        errors.append((field, problem))
    return value


def _canary(value: Any, versions, errors) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(("canary", 'must be null or {"version": "<version>", "share": 0.1}'))
        return None
    errors += [(f"canary.{k}", "is not a canary field") for k in value if k not in CANARY_FIELDS]
    if "version" not in value:
        errors.append(("canary.version", "is required"))
    elif problem := _version_error(value["version"], versions):
        errors.append(("canary.version", problem))
    share = value.get("share")
    number = isinstance(share, int | float) and not isinstance(share, bool)
    if not number or not math.isfinite(share) or not 0 <= share <= 1:
        errors.append(("canary.share", f"must be a number from 0 to 1, got {share!r}"))
    return {"version": value.get("version"), "share": float(share) if number else share}


def _shadow(value: Any, versions, errors) -> list:
    if not isinstance(value, list):
        errors.append(("shadow", 'must be a list of versions, e.g. ["5"]'))
        return []
    if len(value) > MAX_SHADOWS:
        errors.append(("shadow", f"names {len(value)} versions; at most {MAX_SHADOWS}"))
    seen: set = set()
    for index, version in enumerate(value):
        if problem := _version_error(version, versions):
            errors.append((f"shadow[{index}]", problem))
        elif version in seen:
            errors.append((f"shadow[{index}]", f"repeats version {version}"))
        seen.add(version if isinstance(version, str) else repr(version))
    return list(value)


def _enabled(value: Any, errors) -> bool:
    if not isinstance(value, bool):
        errors.append(("enabled", f"must be true or false, got {value!r}"))
        return True
    return value


def _overlaps(document: dict) -> list[tuple[str, str]]:
    """A version answers in one arm only: production, canary and each shadow are distinct,
    and the fallback (served only while the policy is off) is neither production nor canary."""
    arms: dict[str, str] = {}
    errors = []
    named = [("production", document["production"])]
    if document["canary"]:
        named.append(("canary.version", document["canary"]["version"]))
    named += [(f"shadow[{i}]", v) for i, v in enumerate(document["shadow"])]
    for field, version in named:
        if not isinstance(version, str):
            continue
        if version in arms and not (
            field.startswith("shadow") and arms[version].startswith("shadow")
        ):
            errors.append((field, f"version {version} is already in {arms[version]}"))
        arms.setdefault(version, field)
    fallback = document["fallback"]
    if isinstance(fallback, str) and fallback in arms and not arms[fallback].startswith("shadow"):
        errors.append(
            (
                "fallback",
                f"version {fallback} is already in {arms[fallback]}; "
                "the fallback answers while the policy is off, so it must be another version",
            )
        )
    return errors
