"""The top reasons of decisions, kept beside their newest SHAP result for the search.

Each stored SHAP result replaces its decision's reasons (one row, explain.TopReasons), in
the transaction that stores it; a failed attempt leaves the previous result's reasons, as
it leaves the result.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection

from auditapp.decisions.models import Decision
from explain.models import TopReasons

# One statement for a batch on PostgreSQL: a decision explained again has its row replaced.
REPLACE_SQL = """
INSERT INTO {table} (decision_id, first, second, third, predicted_at)
SELECT v.decision_id, v.first, v.second, v.third, d.predicted_at
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[])
     AS v(decision_id, first, second, third)
JOIN {decisions} d ON d.id = v.decision_id
ON CONFLICT (decision_id) DO UPDATE
SET first = EXCLUDED.first, second = EXCLUDED.second, third = EXCLUDED.third
"""


def replace_top_reasons(top: Sequence[tuple[int, Sequence[str]]]) -> None:
    """Make `top` ((decision id, its features ranked, largest first)) their reasons."""
    rows = [(decision_id, *_places(features)) for decision_id, features in top if features]
    if not rows:
        return
    if connection.vendor == "postgresql":
        table, decisions = TopReasons._meta.db_table, Decision._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                REPLACE_SQL.format(table=table, decisions=decisions),
                [list(column) for column in zip(*rows, strict=True)],
            )
        return
    decision_ids = [row[0] for row in rows]
    TopReasons.objects.filter(decision_id__in=decision_ids).delete()
    moments = dict(Decision.objects.filter(pk__in=decision_ids).values_list("pk", "predicted_at"))
    TopReasons.objects.bulk_create(
        TopReasons(
            decision_id=decision_id,
            first=first,
            second=second,
            third=third,
            predicted_at=moments[decision_id],
        )
        for decision_id, first, second, third in rows
    )


def _places(features: Sequence[str]) -> tuple[str, str, str]:
    """The first three names, "" where there are fewer."""
    first, second, third = [*features[:3], "", ""][:3]
    return first, second, third
