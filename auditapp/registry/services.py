"""Registering model versions and changing their stage."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction

from auditapp import textcheck
from auditapp.accounts import records, roles
from auditapp.accounts.audit import record_event
from auditapp.approvals.models import Approval
from auditapp.approvals.services import gated, request_approval
from auditapp.errors import Conflict, InvalidInput
from auditapp.registry.artifacts import (
    FORMATS,
    ArtifactError,
    UntrustedTypesError,
    check_model_fits_schema,
    load_artifact,
    probe_rows,
    sha256_hex,
)
from auditapp.registry.models import (
    AGREEMENT_DEFAULTS,
    ModelVersion,
    RegisteredModel,
    StageChange,
)
from auditapp.registry.records import MODEL_VERSION, STAGE_CHANGE
from auditapp.registry.signals import version_checking
from auditapp.textcheck import format_path, json_problem
from explain.schema import Schema, SchemaError, parse_schema

# \Z, not $: "$" also matches before a final newline ("credit\n").
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}\Z")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,49}\Z")
CARD_TEXT_FIELDS = ("description", "intended_use", "limitations", "training_data")
MAX_BACKGROUND_ROWS = 10_000
MAX_REPORTED_ROWS = 20


@dataclass
class VersionUpload:
    """What a client sends to register a model version."""

    name: str
    version: str
    artifact: bytes
    artifact_format: str
    schema: Any
    background: bytes | None = None
    card: Any = None
    explain: Any = None


def _load_json(value: Any, field: str) -> Any:
    if value is None or isinstance(value, dict | list):
        loaded = value
    else:
        try:
            loaded = textcheck.loads(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInput(f"{field} is not valid JSON ({exc}).", code="invalid_json") from None
    # What the database cannot store (NUL, lone surrogates, deep nesting) is named here.
    if problem := json_problem(loaded, max_depth=settings.ATTEST_MAX_JSON_DEPTH):
        path = format_path((field, *problem[0]))
        raise InvalidInput(
            f"{path} {problem[1]}.", code="invalid_json", details={path: [problem[1]]}
        )
    return loaded


def parse_background(data: bytes, schema: Schema) -> list[dict]:
    """Typed rows of a background CSV, or InvalidInput naming the bad rows."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(
            "background must be a UTF-8 CSV file.", code="invalid_background"
        ) from None
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    # Other columns (a label, an id) are left alone: a background is often a data extract.
    if problem := textcheck.csv_header_problem(header, schema.names):
        raise InvalidInput(f"background CSV {problem}.", code="invalid_background")
    rows, problems = [], []
    for line, raw in enumerate(reader, start=2):
        if ragged := textcheck.ragged_row(raw, header):
            problems.append({"line": line, "errors": [ragged]})
            continue
        inputs, errors = schema.text_row_to_inputs(raw)
        errors = errors or schema.input_errors(inputs)
        if errors:
            problems.append({"line": line, "errors": [f"{f}: {m}" for f, m in errors]})
        rows.append(inputs)
    if problems:
        raise InvalidInput(
            f"{len(problems)} background row(s) do not fit the schema.",
            code="invalid_background",
            details=problems[:MAX_REPORTED_ROWS],
        )
    if not rows:
        raise InvalidInput("background CSV has no rows.", code="invalid_background")
    if len(rows) > MAX_BACKGROUND_ROWS:
        raise InvalidInput(
            f"background has {len(rows)} rows; at most {MAX_BACKGROUND_ROWS} are accepted "
            "(a representative sample is enough).",
            code="invalid_background",
        )
    return rows


def _parse_card(card: Any) -> dict:
    card = _load_json(card, "card") or {}
    if not isinstance(card, dict):
        raise InvalidInput.named("card", "must be a JSON object", code="invalid_card")
    unknown = sorted(set(card) - {*CARD_TEXT_FIELDS, "metrics"})
    if unknown:
        raise InvalidInput(
            f"card has unknown field(s) {unknown}; allowed: {[*CARD_TEXT_FIELDS, 'metrics']}.",
            code="invalid_card",
        )
    if not isinstance(card.get("metrics", {}), dict):
        raise InvalidInput("card.metrics must be an object of named figures.", code="invalid_card")
    return card


@dataclass(frozen=True)
class ExplainConfig:
    """The client's `explain` object, resolved: when LIME runs, and how explanations are judged."""

    lime_mode: str
    lime_sample_rate: float
    settings: dict  # stored as ModelVersion.explain_settings, defaults filled in


def _parse_explain_config(config: Any) -> ExplainConfig:
    """Parse the `explain` object; each key group has its own small parser below."""
    config = _load_json(config, "explain") or {}
    if not isinstance(config, dict):
        raise InvalidInput.named("explain", "must be a JSON object", code="invalid_explain")
    mode, rate = _lime_config(config)
    settings = {"agreement": _agreement_config(config), **_counterfactual_config(config)}
    return ExplainConfig(mode, rate, settings=settings)


def _counterfactual_config(config: dict) -> dict:
    """explain.counterfactuals ("all", the default; "sample"; "on_demand") and
    explain.counterfactual_sample_rate: which adverse decisions get counterfactuals.
    Stored only when given (a version without them: every adverse decision)."""
    if "counterfactuals" not in config and "counterfactual_sample_rate" not in config:
        return {}
    mode = config.get("counterfactuals", "all")
    rate = config.get("counterfactual_sample_rate", 0.1 if mode == "sample" else 1.0)
    valid_modes = [m for m, _ in ModelVersion.COUNTERFACTUAL_MODES]
    if mode not in valid_modes:
        raise InvalidInput(
            f"explain.counterfactuals must be one of {valid_modes}.", code="invalid_explain"
        )
    if not _is_number(rate) or not 0 < rate <= 1:
        raise InvalidInput(
            "explain.counterfactual_sample_rate must be in (0, 1].", code="invalid_explain"
        )
    return {"counterfactuals": {"mode": mode, "sample_rate": float(rate)}}


def _lime_config(config: dict) -> tuple[str, float]:
    """explain.lime and explain.lime_sample_rate: when LIME runs."""
    mode = config.get("lime", "all")
    rate = config.get("lime_sample_rate", 0.1 if mode == "sample" else 1.0)
    valid_modes = [m for m, _ in ModelVersion.LIME_MODES]
    if mode not in valid_modes:
        raise InvalidInput(f"explain.lime must be one of {valid_modes}.", code="invalid_explain")
    if not _is_number(rate) or not 0 < rate <= 1:
        raise InvalidInput("explain.lime_sample_rate must be in (0, 1].", code="invalid_explain")
    return mode, float(rate)


def _parse_truth_settings(config: Any) -> dict:
    """explain.allow_approximate (default false) and explain.score_tolerance (when given;
    the engine's default applies otherwise)."""
    config = _load_json(config, "explain") or {}
    if not isinstance(config, dict):
        return {"allow_approximate": False}
    allow = config.get("allow_approximate", False)
    if not isinstance(allow, bool):
        raise InvalidInput(
            "explain.allow_approximate must be true or false.", code="invalid_explain"
        )
    settings = {"allow_approximate": allow}
    if "score_tolerance" in config:
        tolerance = config["score_tolerance"]
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
            raise InvalidInput("explain.score_tolerance must be a number.", code="invalid_explain")
        if not 0 <= tolerance < 1:
            raise InvalidInput("explain.score_tolerance must be in [0, 1).", code="invalid_explain")
        settings["score_tolerance"] = float(tolerance)
    return settings


def _self_test(checked: CheckedUpload, settings: dict) -> dict:
    """Ask the apps above (the explanation engine) to try the version; they may refuse it."""
    responses = version_checking.send(
        sender=ModelVersion,
        model=checked.model,
        schema=checked.schema,
        background=checked.frame if checked.background else None,
        rows=checked.background or probe_rows(checked.schema),
        background_sha256=checked.background_sha256,
        artifact_sha256=checked.sha256,
        settings=settings,
    )
    return {answer["key"]: answer["figures"] for _, answer in responses if answer}


# explain.agreement: the thresholds of the SHAP-LIME agreement rule, each with its range.
AGREEMENT_RANGES = {
    "min_fidelity": (0.0, 1.0),
    "min_top_k_overlap": (0.0, 1.0),
    "min_rank_correlation": (-1.0, 1.0),
}


def _agreement_config(config: dict) -> dict:
    """explain.agreement: the version's agreement thresholds, the rule's defaults where absent."""
    given = config.get("agreement", {})
    if not isinstance(given, dict):
        raise InvalidInput(
            f"explain.agreement must be an object with any of {list(AGREEMENT_RANGES)}.",
            code="invalid_explain",
        )
    problems = {
        f"explain.agreement.{key}": f"is not a setting; allowed: {list(AGREEMENT_RANGES)}"
        for key in given
        if key not in AGREEMENT_RANGES
    }
    for key, value in given.items():
        low, high = AGREEMENT_RANGES.get(key, (None, None))
        if low is not None and not (_is_number(value) and low <= value <= high):
            problems[f"explain.agreement.{key}"] = f"must be a number from {low:g} to {high:g}"
    if problems:
        raise InvalidInput(
            f"explain.agreement is invalid: {', '.join(sorted(problems))}.",
            code="invalid_explain",
            details=problems,
        )
    return {**AGREEMENT_DEFAULTS, **{key: float(value) for key, value in given.items()}}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class CheckedUpload:
    """What checking an upload produced, so that nothing is parsed or hashed twice."""

    schema: Schema
    background: list[dict] | None
    model: Any
    frame: Any  # the rows the model was tried on: the background's, else probe rows
    sha256: str
    background_sha256: str


def _require_assigned(actor: roles.Actor, name: str) -> None:
    """New versions of an existing model come only from those who may see it (its assignees).

    Names are unique, so that a name is taken is the one thing a hidden model
    cannot keep to itself; the answer says no more (not who may see it, nor why).
    """
    existing = RegisteredModel.objects.filter(name=name)
    if existing.exists() and not existing.visible_to(actor).exists():
        raise Conflict(f"The name {name!r} is taken; choose another.", code="name_taken")


def _check_upload(actor: roles.Actor, upload: VersionUpload) -> CheckedUpload:
    """Everything that can be checked before writing to the database."""
    actor.require(roles.REGISTER_MODELS)
    if upload.artifact_format not in FORMATS:
        raise InvalidInput.named("artifact_format", f"must be one of {list(FORMATS)}")
    if upload.artifact_format == "joblib":
        actor.require(roles.UPLOAD_JOBLIB)
    if not NAME_PATTERN.match(upload.name or ""):
        raise InvalidInput.named("name", "must be lower-case letters, digits, '-' or '_' (≤ 100)")
    if not VERSION_PATTERN.match(upload.version or ""):
        raise InvalidInput.named("version", "must be letters, digits, '.', '-' or '_' (≤ 50)")
    # Before the artifact is loaded: a joblib file is a pickle, and loading one runs its code.
    _require_assigned(actor, upload.name)
    if not upload.artifact:
        raise InvalidInput("artifact is required (the model file).")
    try:
        schema = parse_schema(_load_json(upload.schema, "schema"))
    except SchemaError as exc:
        raise InvalidInput(
            "The schema is invalid.", code="invalid_schema", details=exc.problems
        ) from None
    background = parse_background(upload.background, schema) if upload.background else None
    try:
        model = load_artifact(upload.artifact, upload.artifact_format)
        frame = schema.frame(background or probe_rows(schema))
        check_model_fits_schema(model, schema, frame)
    except ArtifactError as exc:
        details = {"untrusted_types": exc.types} if isinstance(exc, UntrustedTypesError) else None
        raise InvalidInput(
            f"The artifact was refused: {exc}.", code="invalid_artifact", details=details
        ) from None
    return CheckedUpload(
        schema=schema,
        background=background,
        model=model,
        frame=frame,
        sha256=sha256_hex(upload.artifact),
        background_sha256=sha256_hex(upload.background) if upload.background else "",
    )


def register_model_version(actor: roles.Actor, upload: VersionUpload, *, ip=None) -> ModelVersion:
    """Check an uploaded model against its schema and background, then record it."""
    checked = _check_upload(actor, upload)
    schema, sha256 = checked.schema, checked.sha256
    card = _parse_card(upload.card)
    explain = _parse_explain_config(upload.explain)
    explain_settings = {**explain.settings, **_parse_truth_settings(upload.explain)}
    self_test = _self_test(checked, explain_settings)
    with transaction.atomic():
        registered = RegisteredModel.objects.select_for_update().filter(name=upload.name).first()
        if registered is None:
            registered = RegisteredModel.objects.create(
                name=upload.name,
                task=schema.target.type,
                description=card.get("description", ""),
                owner=actor.user,
                four_eyes=settings.ATTEST_FOUR_EYES_NEW_MODELS,
            )
            registered.assignees.add(actor.user)
        else:
            _require_assigned(actor, upload.name)  # again, under the row lock
        if registered.task != schema.target.type:
            raise InvalidInput(
                f"{upload.name!r} is a {registered.task} model; "
                f"this schema says {schema.target.type}."
            )
        if registered.versions.filter(version=upload.version).exists():
            raise Conflict(
                f"{upload.name} version {upload.version} already exists; versions are immutable.",
                code="version_exists",
            )
        model_version = ModelVersion(
            registered_model=registered,
            version=upload.version,
            artifact_format=upload.artifact_format,
            artifact_sha256=sha256,
            schema=schema.raw,
            schema_sha256=sha256_hex(json.dumps(schema.raw, sort_keys=True).encode()),
            background_rows=len(checked.background or []),
            background_sha256=checked.background_sha256,
            metrics=card.get("metrics", {}),
            lime_mode=explain.lime_mode,
            lime_sample_rate=explain.lime_sample_rate,
            explain_settings=explain_settings,
            self_test=self_test,
            created_by=actor.user,
            **{f: card.get(f, "") for f in CARD_TEXT_FIELDS},
        )
        stem = f"{upload.name}-{upload.version}-{sha256[:12]}"
        model_version.artifact.save(
            f"{stem}.{upload.artifact_format}", ContentFile(upload.artifact), save=False
        )
        if upload.background:
            model_version.background.save(f"{stem}.csv", ContentFile(upload.background), save=False)
        model_version.save()
        change = StageChange.objects.create(
            model_version=model_version, to_stage=model_version.stage, changed_by=actor.user
        )
        records.append(MODEL_VERSION.name, [model_version.pk])
        records.append(STAGE_CHANGE.name, [change.pk])
        record_event(
            "model_version.registered",
            actor=actor,
            target=model_version,
            ip=ip,
            model=upload.name,
            version=upload.version,
            sha256=sha256,
            format=upload.artifact_format,
        )
    return model_version


STAGE_KIND = "stage"  # the kinds of four-eyes change the registry makes (apps.py)
FOUR_EYES_KIND = "four_eyes"


@transaction.atomic
def change_stage(
    actor: roles.Actor,
    model_version: ModelVersion,
    stage: str,
    *,
    ip=None,
    approval: Approval | None = None,
) -> ModelVersion | Approval:
    """Move a version to another stage, recording who and when; or, when the move is to or
    from production and the model is under four-eyes, ask for it (the Approval returned).
    `approval`: the approved request being applied (by approvals, as its requester)."""
    actor.require(roles.CHANGE_STAGE)
    stages = [s for s, _ in ModelVersion.STAGES]
    if stage not in stages:
        raise InvalidInput.named("stage", f"must be one of {stages}, got {stage!r}")
    model_version = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
    if approval is not None and model_version.stage != approval.change["from"]:
        raise Conflict(
            f"{model_version} moved to {model_version.stage} since the request "
            f"(from {approval.change['from']}); nothing was changed.",
            code="approval_stale",
        )
    if model_version.stage == stage:
        raise Conflict(f"{model_version} is already in {stage}.", code="same_stage")
    production = ModelVersion.PRODUCTION in (model_version.stage, stage)
    if approval is None and production and gated(actor, model_version.registered_model):
        return request_approval(
            actor,
            STAGE_KIND,
            registered_model=model_version.registered_model,
            model_version=model_version,
            change={"from": model_version.stage, "to": stage},
            summary=f"v{model_version.version}: {model_version.stage} → {stage}",
            ip=ip,
        )
    change = StageChange.objects.create(
        model_version=model_version,
        from_stage=model_version.stage,
        to_stage=stage,
        changed_by=actor.user,
    )
    model_version.stage = stage
    model_version.save(update_fields=["stage"])
    records.append(STAGE_CHANGE.name, [change.pk])
    records.append(MODEL_VERSION.name, [model_version.pk])
    record_event(
        "model_version.stage_changed",
        actor=actor,
        target=model_version,
        ip=ip,
        from_stage=change.from_stage,
        to_stage=stage,
        **({"approval": approval.pk} if approval is not None else {}),
    )
    model_version._stage_change = change
    return model_version


def apply_approved_stage(approval: Approval, approver: roles.Actor, ip: str | None) -> dict:
    """An approved stage change, made as its requester's (approvals.changes)."""
    requester = roles.Actor(user=approval.requested_by)
    model_version = ModelVersion.objects.select_related("registered_model").get(
        pk=approval.model_version_id
    )
    moved = change_stage(requester, model_version, approval.change["to"], ip=ip, approval=approval)
    return {"stage_change": moved._stage_change.pk}


@transaction.atomic
def set_four_eyes(
    actor: roles.Actor,
    model: RegisteredModel,
    enabled: Any,
    *,
    ip=None,
    approval: Approval | None = None,
) -> RegisteredModel | Approval:
    """Turn four-eyes on (at once) or off (which itself waits for a second person while it
    is on). Audited."""
    actor.require(roles.CHANGE_STAGE)
    if not isinstance(enabled, bool):
        raise InvalidInput("enabled must be true or false.", details={"enabled": ["a boolean"]})
    model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
    if model.four_eyes == enabled:
        if approval is not None:
            raise Conflict(
                f"Four-eyes is already {'on' if enabled else 'off'} for {model.name}.",
                code="approval_stale",
            )
        return model
    if approval is None and not enabled and gated(actor, model):
        return request_approval(
            actor,
            FOUR_EYES_KIND,
            registered_model=model,
            change={"four_eyes": False},
            summary="four-eyes approvals: on → off",
            ip=ip,
        )
    model.four_eyes = enabled
    model.save(update_fields=["four_eyes"])
    record_event(
        "model.four_eyes_changed",
        actor=actor,
        target=model,
        ip=ip,
        four_eyes=enabled,
        **({"approval": approval.pk} if approval is not None else {}),
    )
    return model


def apply_approved_four_eyes(approval: Approval, approver: roles.Actor, ip: str | None) -> dict:
    requester = roles.Actor(user=approval.requested_by)
    model = RegisteredModel.objects.get(pk=approval.registered_model_id)
    set_four_eyes(requester, model, approval.change["four_eyes"], ip=ip, approval=approval)
    return {"four_eyes": approval.change["four_eyes"]}


@transaction.atomic
def assign_models(user, model_names: list[str], *, actor=None) -> list[RegisteredModel]:
    """Give a user (domain expert or ML engineer) access to the named models."""
    found = {m.name: m for m in RegisteredModel.objects.filter(name__in=model_names)}
    missing = [name for name in model_names if name not in found]
    if missing:
        raise InvalidInput(f"No model named {', '.join(map(repr, missing))}.")
    for model in found.values():
        model.assignees.add(user)
    record_event(
        "models.assigned",
        actor=actor,
        target=user,
        models=sorted(found),
    )
    return list(found.values())


def load_model(model_version: ModelVersion) -> Any:
    """The version's model object, after checking the artifact's sha256."""
    with model_version.artifact.open("rb") as handle:
        data = handle.read()
    return load_artifact(data, model_version.artifact_format, model_version.artifact_sha256)
