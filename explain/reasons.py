"""The top reasons of decisions, kept beside their newest SHAP result for the search.

Each stored SHAP result replaces its decision's reasons, in the transaction that
stores it; a failed attempt leaves the previous result's reasons, as it leaves
the result.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection

from auditapp.decisions.models import Decision
from explain.models import TopReason

REPLACE_SQL = """
INSERT INTO {table} (decision_id, feature, rank, predicted_at)
SELECT v.decision_id, v.feature, v.rank, d.predicted_at
FROM unnest(%s::bigint[], %s::text[], %s::smallint[]) AS v(decision_id, feature, rank)
JOIN {decisions} d ON d.id = v.decision_id
"""


def replace_top_reasons(top: Sequence[tuple[int, Sequence[str]]]) -> None:
    """Make `top` ((decision id, its features ranked, largest first)) their reasons."""
    if not top:
        return
    decision_ids = [decision_id for decision_id, _ in top]
    rows = [
        (decision_id, feature, rank)
        for decision_id, features in top
        for rank, feature in enumerate(features, start=1)
    ]
    if connection.vendor == "postgresql":
        # Two statements for a batch: the delete probes the key, usually finding nothing.
        table, decisions = TopReason._meta.db_table, Decision._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE decision_id = ANY(%s)", [decision_ids])
            cursor.execute(
                REPLACE_SQL.format(table=table, decisions=decisions),
                [list(column) for column in zip(*rows, strict=True)] if rows else [[], [], []],
            )
        return
    TopReason.objects.filter(decision_id__in=decision_ids).delete()
    moments = dict(Decision.objects.filter(pk__in=decision_ids).values_list("pk", "predicted_at"))
    TopReason.objects.bulk_create(
        TopReason(
            decision_id=decision_id, feature=feature, rank=rank, predicted_at=moments[decision_id]
        )
        for decision_id, feature, rank in rows
    )
