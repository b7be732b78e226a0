"""Claiming a batch's work rows: mark them running and count the attempt, atomically.

A claimed row is a plain object (ClaimedExplanation) carrying what the engine
reads of its decision; the rest of the batch fills in what it computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from auditapp.decisions.models import Decision
from auditapp.decisions.signals import explanations_stored
from auditapp.encryption import merged, row_binding
from auditapp.sqlarrays import id_array
from explain import engine, records
from explain.models import Explanation, ExplanationResult
from explain.workrows import write_rows

MAX_ATTEMPTS = 5


@dataclass
class ClaimedDecision:
    """What a batch reads of a decision: its inputs, its hash (default seed), its score,
    and what the review rules and the search's reasons need (prediction, time), so that
    storing the batch reads the decisions no more."""

    id: int
    inputs: dict
    content_hash: str
    score: float | None
    prediction: Any  # the recorded class (JSON: text, a number or a boolean)
    predicted_at: datetime


@dataclass
class ClaimedExplanation:
    """An explanation row a batch has claimed: what it read, then what it will write.

    A plain object rather than a model instance: building a few hundred Explanation
    and Decision instances per batch costs more than TreeSHAP on a small model.
    Its attributes are named as the model's, so the review rules read it alike.
    `seed` is its newest result's (the one a re-run reproduces); `outcome` what
    this batch computed, stored as a new result (`result_id`).
    """

    id: int
    decision: ClaimedDecision
    method: str
    status: str
    attempts: int
    seed: int | None
    error: str
    outcome: engine.ExplanationResult | None = None
    result_id: int | None = None
    agreement: dict | None = None
    updated_at: datetime | None = None

    @property
    def pk(self) -> int:
        return self.id

    @property
    def decision_id(self) -> int:
        return self.decision.id

    @property
    def attributions(self) -> dict | None:
        return None if self.outcome is None else self.outcome.attributions

    @property
    def quality(self) -> dict | None:
        if self.outcome is None:
            return None
        return records.with_agreement(self.outcome.quality, self.agreement)


GAVE_UP = f"gave up after {MAX_ATTEMPTS} attempts"

# One statement claims the batch on PostgreSQL: lock the unfinished explanation
# rows nobody else holds (of the explanations only: a SHAP and a LIME task of the
# same decisions must not skip each other), count the attempt (or give up on rows
# that used them all) and return what the engine reads, joined from the decision
# (and the seed of its newest result, if any).
CLAIM_SQL = """
WITH candidates AS (
    SELECT e.id, e.decision_id, e.result_id FROM {explanations} AS e
    JOIN {decisions} AS d ON d.id = e.decision_id
    WHERE e.decision_id = ANY(%(decision_ids)s::bigint[]) AND e.method = %(method)s
      AND d.model_version_id = %(model_version_id)s AND e.status <> %(done)s
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE {explanations} AS e SET
    status = CASE WHEN e.attempts >= %(max_attempts)s THEN %(failed)s ELSE %(running)s END,
    attempts = CASE WHEN e.attempts >= %(max_attempts)s THEN e.attempts ELSE e.attempts + 1 END,
    error = CASE WHEN e.attempts >= %(max_attempts)s AND e.error = '' THEN %(gave_up)s
                 ELSE e.error END,
    updated_at = %(now)s
FROM candidates AS c
    JOIN {decisions} AS d ON d.id = c.decision_id
    LEFT JOIN {results} AS r ON r.id = c.result_id
WHERE e.id = c.id
RETURNING e.id, e.decision_id, e.status, e.attempts, r.seed, e.error,
          d.content_hash, d.score, d.prediction, d.predicted_at,
          d.inputs, d.sealed_inputs, d.registered_model_id, d.request_id
"""
CLAIM_COLUMNS = (
    "id",
    "decision_id",
    "status",
    "attempts",
    "result__seed",
    "error",
    "decision__content_hash",
    "decision__score",
    "decision__prediction",
    "decision__predicted_at",
    "decision__inputs",
    "decision__sealed_inputs",
    "decision__registered_model_id",
    "decision__request_id",
)


def claim(model_version_id: int, method: str, decision_ids: list[int]) -> list[ClaimedExplanation]:
    """Mark the batch's unfinished explanations running and count the attempt, atomically.

    Rows that used up their attempts are marked failed instead, and reviewed.
    """
    now = timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            rows = _claim_postgresql(model_version_id, method, decision_ids, now)
        else:
            rows = _claim_portable(model_version_id, method, decision_ids, now)
        exhausted = [row for row in rows if row.status == Explanation.FAILED]
        if exhausted:
            explanations_stored.send(
                Explanation, explanations=exhausted, explain_settings=None, model_version=None
            )
    return [row for row in rows if row.status == Explanation.RUNNING]


def _claim_postgresql(model_version_id, method, decision_ids, now) -> list[ClaimedExplanation]:
    sql = CLAIM_SQL.format(
        explanations=Explanation._meta.db_table,
        decisions=Decision._meta.db_table,
        results=ExplanationResult._meta.db_table,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "decision_ids": id_array(decision_ids),
                "method": method,
                "model_version_id": model_version_id,
                "done": Explanation.DONE,
                "failed": Explanation.FAILED,
                "running": Explanation.RUNNING,
                "max_attempts": MAX_ATTEMPTS,
                "gave_up": GAVE_UP,
                "now": now,
            },
        )
        fetched = cursor.fetchall()
    # Django leaves jsonb (the prediction, the inputs) as text for JSONField to decode;
    # orjson is several times faster.
    return sorted(
        (
            _claimed(
                method,
                now,
                *row[:8],
                orjson.loads(row[8]),
                row[9],
                orjson.loads(row[10]),
                *row[11:],
            )
            for row in fetched
        ),
        key=lambda row: row.decision_id,
    )


def _claim_portable(model_version_id, method, decision_ids, now) -> list[ClaimedExplanation]:
    """The same claim in ORM statements, for SQLite (one writer at a time: nothing to skip)."""
    rows = (
        Explanation.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(
            decision_id__in=decision_ids,
            decision__model_version_id=model_version_id,
            method=method,
        )
        .exclude(status=Explanation.DONE)
        .order_by("decision_id")
        .values_list(*CLAIM_COLUMNS)
    )
    claimed = [_claimed(method, now, *row) for row in rows]
    exhausted = [row for row in claimed if row.attempts >= MAX_ATTEMPTS]
    running = [row for row in claimed if row.attempts < MAX_ATTEMPTS]
    Explanation.objects.filter(pk__in=[row.id for row in running]).update(
        status=Explanation.RUNNING, attempts=F("attempts") + 1, updated_at=now
    )
    for row in running:
        row.status, row.attempts = Explanation.RUNNING, row.attempts + 1
    for row in exhausted:
        row.status, row.error = Explanation.FAILED, row.error or GAVE_UP
    write_rows(exhausted, ["status", "error", "updated_at"])
    return claimed


def _claimed(
    method, now, pk, decision_id, status, attempts, seed, error, *row
) -> ClaimedExplanation:
    content_hash, score, prediction, predicted_at, inputs, sealed, model_id, request_id = row
    # The explainers need every input: the sealed ones are opened here, in the worker.
    inputs = merged(inputs, sealed, row_binding(model_id, request_id))
    return ClaimedExplanation(
        id=pk,
        decision=ClaimedDecision(
            decision_id, inputs, content_hash, score, prediction, predicted_at
        ),
        method=method,
        status=status,
        attempts=attempts,
        seed=seed,
        error=error,
        updated_at=now,
    )
