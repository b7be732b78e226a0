"""Writing many explanation work rows at once: one statement, not a statement a row.

The claim and the store of a batch write a few hundred rows each; Django's
bulk_update spends seconds building CASE expressions for them, PostgreSQL
needs milliseconds for these.
"""

from __future__ import annotations

from datetime import datetime

import orjson
from django.db import connection

from auditapp.sqlarrays import id_array
from explain.models import Explanation

# Column types, for writing many work rows in one statement on PostgreSQL.
COLUMN_TYPES = {
    "status": "text",
    "error": "text",
    "result_id": "bigint",
    "agreement": "jsonb",
    "updated_at": "timestamptz",
}
SCALARS = (str, int, float, bool, type(None), datetime)


def write_rows(explanations: list, fields: list[str]) -> None:
    """Write these fields of many explanations' work rows: one UPDATE on PostgreSQL.

    A value every row shares (the status, the time, no agreement) is sent once, as a
    parameter; only what differs per row travels in the JSON recordset.
    (Django's bulk_update spends seconds building CASE expressions for a few
    hundred rows; the database needs milliseconds for this statement.)
    """
    if not explanations:
        return
    if connection.vendor != "postgresql":
        models = [Explanation(pk=e.pk, **{f: getattr(e, f) for f in fields}) for e in explanations]
        Explanation.objects.bulk_update(models, fields)
        return
    shared = [f for f in fields if _shared_by_all(explanations, f)]
    varying = [f for f in fields if f not in shared]
    assignments = [f"{f} = %s::{COLUMN_TYPES[f]}" for f in shared]
    assignments += [f"{f} = v.{f}" for f in varying]
    params: list = [_parameter(f, getattr(explanations[0], f)) for f in shared]
    table = Explanation._meta.db_table
    if varying:
        records = [{"id": e.pk, **{f: getattr(e, f) for f in varying}} for e in explanations]
        columns = ", ".join(f"{f} {COLUMN_TYPES[f]}" for f in varying)
        sql = (
            f"UPDATE {table} AS e SET {', '.join(assignments)} "
            f"FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, {columns}) WHERE e.id = v.id"
        )
        params.append(orjson.dumps(records).decode())
    else:
        sql = f"UPDATE {table} AS e SET {', '.join(assignments)} WHERE e.id = ANY(%s::bigint[])"
        params.append(id_array([e.pk for e in explanations]))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _shared_by_all(explanations: list, field: str) -> bool:
    """The same value on every row: the same object, or equal scalars of one type."""
    values = [getattr(e, field) for e in explanations]
    first = values[0]
    if all(value is first for value in values):
        return True
    if isinstance(first, SCALARS):
        kind = type(first)
        return all(type(value) is kind and value == first for value in values)
    return False


def _parameter(field: str, value):
    if COLUMN_TYPES[field] == "jsonb":
        return None if value is None else orjson.dumps(value).decode()
    return value


def lock_rows(explanation_ids: list[int]) -> None:
    """Lock these work rows until the transaction ends (in id order, as every locker)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {Explanation._meta.db_table} WHERE id = ANY(%s::bigint[]) "
                "ORDER BY id FOR UPDATE",
                [id_array(explanation_ids)],
            )
        return
    list(
        Explanation.objects.select_for_update(of=("self",))
        .filter(pk__in=explanation_ids)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
