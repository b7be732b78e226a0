"""The top reasons of decisions, kept beside their newest SHAP result for the search.

Each stored SHAP result replaces its decision's reasons (one row, explain.TopReasons), in
the transaction that stores it; a failed attempt leaves the previous result's reasons, as
it leaves the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db import connection

from auditapp.sqlarrays import id_array
from explain.models import TopReasons

# One statement for a batch on PostgreSQL: a decision explained again has its row replaced.
# The decision's time comes with it (the batch read it when it claimed the rows): no join.
REPLACE_SQL = """
INSERT INTO {table} (decision_id, predicted_at, first, second, third)
SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::text[])
ON CONFLICT (decision_id) DO UPDATE
SET first = EXCLUDED.first, second = EXCLUDED.second, third = EXCLUDED.third
"""


def replace_top_reasons(top: Sequence[tuple[int, datetime, Sequence[str]]]) -> None:
    """Make `top` ((decision id, its predicted_at, its features ranked, largest first))
    their reasons."""
    rows = [
        (decision_id, predicted_at, *_places(features))
        for decision_id, predicted_at, features in top
        if features
    ]
    if not rows:
        return
    if connection.vendor == "postgresql":
        decision_ids, moments, *places = zip(*rows, strict=True)
        with connection.cursor() as cursor:
            cursor.execute(
                REPLACE_SQL.format(table=TopReasons._meta.db_table),
                [id_array(decision_ids), list(moments), *(list(names) for names in places)],
            )
        return
    TopReasons.objects.filter(decision_id__in=[row[0] for row in rows]).delete()
    TopReasons.objects.bulk_create(
        TopReasons(
            decision_id=decision_id,
            predicted_at=predicted_at,
            first=first,
            second=second,
            third=third,
        )
        for decision_id, predicted_at, first, second, third in rows
    )


def _places(features: Sequence[str]) -> tuple[str, str, str]:
    """The first three names, "" where there are fewer."""
    first, second, third = [*features[:3], "", ""][:3]
    return first, second, third
