"""Labelled data for retraining: decisions of a version with their outcomes and expert labels.

One row per decision that has an outcome, a corrected label or an override in
the period; sensitive features are masked for roles that may not see them, as
everywhere else. CSV or Parquet; every export is an audit event.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pandas as pd
from django.db.models import Exists, OuterRef
from pandas.api.types import is_object_dtype, is_string_dtype

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.csvcells import safe_cell
from auditapp.decisions.models import Decision, Outcome
from auditapp.decisions.presenters import MASK, DecisionPresenter
from auditapp.errors import InvalidInput
from auditapp.filtering import in_utc, refuse_empty_period, refuse_more_rows_than
from auditapp.registry.models import ModelVersion
from auditapp.reviews.models import Feedback, Override

FORMATS = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
MAX_ROWS = 200_000


def labelled_frame(
    actor: roles.Actor, model_version: ModelVersion, start: datetime | None, end: datetime | None
) -> pd.DataFrame:
    actor.require(roles.EXPORT_TRAINING_DATA)
    decisions = Decision.objects.filter(model_version=model_version).with_related()
    if start:
        decisions = decisions.filter(predicted_at__gte=start)
    if end:
        decisions = decisions.filter(predicted_at__lt=end)
    decisions = decisions.filter(
        Exists(Outcome.objects.filter(decision=OuterRef("pk")))
        | Exists(Feedback.objects.filter(decision=OuterRef("pk")).exclude(corrected_label=None))
        | Exists(Override.objects.filter(decision=OuterRef("pk")))
    ).order_by("predicted_at", "pk")
    refuse_more_rows_than(decisions, MAX_ROWS, "labelled data of this period")
    rows = list(decisions[:MAX_ROWS])
    ids = [d.pk for d in rows]
    outcomes = _latest(Outcome.objects.filter(decision_id__in=ids).order_by("observed_at", "pk"))
    overrides = _latest(Override.objects.filter(decision_id__in=ids).order_by("created_at", "pk"))
    feedback: dict[int, list[Feedback]] = {}
    for f in Feedback.objects.filter(decision_id__in=ids).order_by("created_at", "pk"):
        feedback.setdefault(f.decision_id, []).append(f)
    presenter = DecisionPresenter(actor)
    names = model_version.parsed_schema.names
    return pd.DataFrame(
        [_row(d, presenter, names, outcomes, overrides, feedback.get(d.pk, [])) for d in rows],
        columns=[
            "decision_id",
            "request_id",
            "predicted_at",
            *names,
            "prediction",
            "score",
            "outcome",
            "outcome_observed_at",
            "corrected_label",
            "override_outcome",
            "verdicts",
            "explanation_ratings",
        ],
    )


def _latest(queryset) -> dict:
    return {item.decision_id: item for item in queryset}  # ordered oldest first: last wins


def _row(decision, presenter, names, outcomes, overrides, feedback) -> list:
    masked = set(presenter.masked_features(decision))
    outcome = outcomes.get(decision.pk)
    override = overrides.get(decision.pk)
    corrected = [f.corrected_label for f in feedback if f.corrected_label is not None]
    return [
        decision.pk,
        decision.request_id,
        decision.predicted_at,
        *[MASK if n in masked else decision.full_inputs().get(n) for n in names],
        decision.prediction,
        decision.score,
        outcome.outcome if outcome else None,
        outcome.observed_at if outcome else None,
        corrected[-1] if corrected else None,
        override.outcome if override else None,
        ";".join(f.verdict for f in feedback),
        ";".join(str(f.explanation_rating) for f in feedback if f.explanation_rating),
    ]


def export_labelled(
    actor: roles.Actor, model_version: ModelVersion, fmt: str, start=None, end=None, *, ip=None
) -> bytes:
    """The labelled data as CSV or Parquet bytes; the export is audited."""
    if fmt not in FORMATS:
        raise InvalidInput.named("format", f"must be one of {sorted(FORMATS)}")
    frame = labelled_frame(actor, model_version, start, end)
    buffer = io.BytesIO()
    if fmt == "csv":
        _formula_safe(frame).to_csv(buffer, index=False)
    else:
        # Mixed-type label columns (classes may be text or numbers) are stored as text.
        for column in ("prediction", "outcome", "corrected_label", "override_outcome"):
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
        frame.to_parquet(buffer, index=False)
    record_event(
        "labelled_data.exported",
        actor=actor,
        target=model_version,
        ip=ip,
        format=fmt,
        rows=len(frame),
        period={
            "from": start.isoformat() if start else None,
            "to": end.isoformat() if end else None,
        },
    )
    return buffer.getvalue()


def _formula_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells and headers through safe_cell (no spreadsheet formulas); numbers as they are."""
    safe = frame.copy()
    for column in safe.columns:
        if is_object_dtype(safe[column]) or is_string_dtype(safe[column]):
            safe[column] = safe[column].map(safe_cell)
    safe.columns = [safe_cell(str(column)) for column in safe.columns]
    return safe


def parse_period(params) -> tuple[datetime | None, datetime | None]:
    """`from` / `to` query parameters (ISO-8601; a date alone means midnight UTC), in UTC:
    an offset PostgreSQL does not take (+18:04 is valid ISO-8601) is converted, not sent."""
    bounds: list[datetime | None] = []
    for name in ("from", "to"):
        text = params.get(name) or ""
        if not text:
            bounds.append(None)
            continue
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput(f"{name} must be an ISO-8601 date or time, got {text!r}.") from None
        utc = in_utc(moment) if moment.tzinfo else moment.replace(tzinfo=UTC)
        if utc is None:
            raise InvalidInput(
                f"{name} is outside the years 1 to 9999 in UTC.",
                code="invalid_parameters",
                details={name: ["outside the years 1 to 9999 in UTC"]},
            )
        bounds.append(utc)
    start, end = bounds
    refuse_empty_period(start, end)
    return start, end
