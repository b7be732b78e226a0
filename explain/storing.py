"""Storing a batch: its new results, the work rows pointed at them, SHAP-LIME agreement.

All in one transaction, which also tells who listens (decisions.signals: the
review queue picks its cases in it).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from django.db import connection, transaction
from django.utils import timezone

from auditapp.decisions.signals import explanations_stored
from auditapp.registry.agreement import judge_agreement
from auditapp.registry.models import agreement_settings
from auditapp.sqlarrays import id_array
from explain import engine, packing, records
from explain.claims import ClaimedExplanation
from explain.models import Explanation, ExplanationResult
from explain.reasons import replace_top_reasons
from explain.results import Stored, insert_results
from explain.workrows import lock_rows, write_rows


def _apply_result(explanation: ClaimedExplanation, result: engine.ExplanationResult, now):
    explanation.updated_at = now
    if not result.ok:
        explanation.status = Explanation.FAILED
        explanation.error = result.error
        return
    explanation.status = Explanation.DONE
    explanation.error = ""
    explanation.outcome = result
    explanation.agreement = None  # judged again against this new result, if there is a partner


# A success points the work row at its new result (its agreement is judged anew).
DONE_FIELDS = ["status", "error", "result_id", "agreement", "updated_at"]
# A failed attempt says why and when; the results stored before stay, and the newest shows.
FAILURE_FIELDS = ["status", "error", "updated_at"]


@dataclass
class Counterpart:
    """The other method's finished explanation of a decision (its newest result), for the
    agreement figures."""

    id: int
    decision_id: int
    method: str
    attributions: dict
    result_quality: dict
    agreement: dict | None = None
    status: str = Explanation.DONE
    error: str = ""

    @property
    def pk(self) -> int:
        return self.id

    @property
    def quality(self) -> dict:
        return records.with_agreement(self.result_quality, self.agreement)


def _counterparts(decision_ids: list[int], method: str, names: list[str]) -> list[Counterpart]:
    """The finished explanations of these decisions by `method`: one query, no model instances."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT e.id, e.decision_id, r.attributions, r.quality "
                f"FROM {Explanation._meta.db_table} AS e "
                f"JOIN {ExplanationResult._meta.db_table} AS r ON r.id = e.result_id "
                "WHERE e.decision_id = ANY(%s::bigint[]) AND e.method = %s AND e.status = %s",
                [id_array(decision_ids), method, Explanation.DONE],
            )
            rows = [(*row[:3], orjson.loads(row[3])) for row in cursor.fetchall()]
    else:
        rows = Explanation.objects.filter(
            decision_id__in=decision_ids, method=method, status=Explanation.DONE
        ).values_list("id", "decision_id", "result__attributions", "result__quality")
    return [
        Counterpart(pk, decision_id, method, packing.unpack(packed, names), quality)
        for pk, decision_id, packed, quality in rows
    ]


def _fill_agreement(
    done: list[ClaimedExplanation], method: str, names: list[str], explain_settings=None
) -> list[Counterpart]:
    """Put SHAP-LIME agreement on the LIME work rows of these decisions, whichever finished
    last (the results compared are kept; the agreement is derived from them).

    The figures come with the verdict under the version's thresholds
    (`explain_settings`): whether they were judged at all (LIME's fit good
    enough), whether they agree, and why.
    A LIME batch fills its own rows (written with its results); a SHAP batch
    returns the LIME rows it filled, to be written too.
    """
    if not done:
        return []
    thresholds = agreement_settings(explain_settings)
    other = "shap" if method == "lime" else "lime"
    counterparts = {
        c.decision_id: c for c in _counterparts([e.decision_id for e in done], other, names)
    }
    changed = []
    for explanation in done:
        partner = counterparts.get(explanation.decision_id)
        if partner is None:
            continue
        shap_row, lime_row = (explanation, partner) if method == "shap" else (partner, explanation)
        fidelity = (lime_row.quality or {}).get("fidelity_r2")
        figures = engine.agreement(shap_row.attributions, lime_row.attributions)
        verdict = judge_agreement(figures, fidelity, thresholds)
        # The row keeps the figures and the verdict's booleans; the thresholds and the
        # sentence are the version's, put back when read (records.shown_agreement).
        lime_row.agreement = records.stored_agreement({**figures, **verdict})
        changed.append(lime_row)
    return changed if method == "shap" else []


def store_results(claimed, results, model_version, method, elapsed_ms) -> list[Stored]:
    """Insert every new result of the batch in one bulk statement, point the work rows at
    them (with the agreement figures), and tell who listens (decisions.signals: the review
    queue picks its cases in this transaction). Returns the results inserted.
    """
    now = timezone.now()
    for explanation, result in zip(claimed, results, strict=True):
        _apply_result(explanation, result, now)
    done = [e for e in claimed if e.status == Explanation.DONE]
    explain_settings = model_version.explain_settings
    with transaction.atomic():
        # Locked first: the newest result of a row is the last stored, so ids and
        # pointers agree even when two tasks explain the same decision at once.
        lock_rows([e.id for e in claimed])
        partners = _fill_agreement(
            done, method, model_version.parsed_schema.names, explain_settings
        )
        stored = insert_results(
            model_version,
            method,
            [(e.decision_id, e.outcome) for e in done],
            elapsed_ms / len(claimed),
            now,
        )
        for explanation, inserted in zip(done, stored, strict=True):
            explanation.result_id = inserted.id
        if method == "shap":
            replace_top_reasons(
                [(e.decision_id, e.decision.predicted_at, e.outcome.top_features) for e in done]
            )
        write_rows(done, DONE_FIELDS)
        write_rows([e for e in claimed if e.status != Explanation.DONE], FAILURE_FIELDS)
        write_rows(partners, ["agreement"])
        explanations_stored.send(
            Explanation,
            explanations=[*claimed, *partners],
            explain_settings=explain_settings,
            model_version=model_version,
        )
    return stored
