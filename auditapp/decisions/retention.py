"""Retiring an expired month: its decisions, and every row that refers to them, leave the
database; the sealed log keeps their hashes, and a sealed declaration says what went.

A month's decisions are those predicted in it (UTC). The rows that go with them are
found from the models' foreign keys, not from a list: outcomes, feedback, review
cases and their events and overrides, explanation work rows, results and top
reasons, decision notices, and whatever refers to a decision tomorrow (through
another such row too). Log records, seals and audit events stay: they hold hashes
and who did what, and they are how verification still proves every kept record
and names what was retired.

In one transaction: a `Retirement` declaration (the month, per table the rows and
the id ranges that hold them and nothing kept, the partitions) is written,
recorded in the log and sealed, then the rows go. On PostgreSQL a month partition whose every
row is retired is DETACHed (kept renamed `..._retired` to dump and drop, or
dropped), and the rest are deleted by id, which the append-only triggers allow
only for the ranges of the declaration written in that transaction
(auditapp/appendonly.py). SQLite has no partitions and no triggers: the rows are
deleted by the same ranges.

Per-model periods and legal holds act on the inputs, not on whole rows: decisions/
input_retention.py erases the personal inputs of expired decisions (decisions/
erasure.py), keeping every row and its proof, unless a hold (decisions/holds.py)
covers them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from django.db import OperationalError, connection, models, transaction
from django.db.models import Q

from auditapp import partitions
from auditapp.accounts import records, roles
from auditapp.accounts.audit import record_event
from auditapp.appendonly import RETIREMENT_SETTING, declaration_time
from auditapp.decisions import tallies
from auditapp.decisions.models import Decision, RetiredRange, Retirement
from auditapp.decisions.sealing import latest_seal, seal_new_records
from auditapp.errors import Conflict, InvalidInput

RETIRED_EVENT = "decisions.retired"
UNIQUE_SUFFIX = "_unique"  # the side table of request-id keys (auditapp/partitions.py)


@dataclass
class TablePlan:
    """What goes of one table: its rows (`retiring`), their id ranges, whole partitions."""

    model: type[models.Model]
    retiring: Q  # which of its rows refer, at some depth, to a retired decision
    depth: int  # foreign keys from it down to decisions: deepest first when deleting
    rows: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)
    partitions: list[tuple[str, int, int]] = field(default_factory=list)  # detached whole
    shared: dict[str, int] = field(default_factory=dict)  # partition -> its rows kept

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def label(self) -> str:
        return str(self.model._meta.verbose_name_plural)

    @property
    def keys(self) -> list[str]:
        """The primary key's columns: `id`, or several (a top reason's decision and feature)."""
        return [f.column for f in self.model._meta.pk_fields]

    @property
    def by_id(self) -> bool:
        """Whether its rows have ids to declare in ranges (a composite key has none)."""
        return self.keys == ["id"]

    def key(self) -> str:
        return self.keys[0] if self.by_id else f"({', '.join(self.keys)})"

    def queryset(self) -> models.QuerySet:
        return self.model._base_manager.filter(self.retiring)

    def declared(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "rows": self.rows,
            "ranges": [list(r) for r in self.ranges],
            "partitions": [name for name, _, _ in self.partitions],
        }


@dataclass
class Plan:
    year: int
    month: int
    drop: bool
    vendor: str
    tables: list[TablePlan]  # in the order rows are deleted: referrers first
    unique_keys: int = 0  # rows of decisions_decision_unique (PostgreSQL)
    declaration: Retirement | None = None
    kept_as: dict[str, str | None] = field(default_factory=dict)  # partition -> its new name

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def mode(self) -> str:
        if not any(t.partitions for t in self.tables):
            return Retirement.DELETE
        return Retirement.DROP if self.drop else Retirement.DETACH

    @property
    def decisions(self) -> TablePlan:
        return self.tables[-1]

    def lines(self) -> list[str]:
        """The plan (or what was done) as an operator reads it, one line a table."""
        done = self.declaration is not None
        out = [
            f"{'Retired' if done else 'Would retire'} {self.label}: the decisions predicted "
            "in it and every row that refers to them."
            + (f" Declaration #{self.declaration.pk}." if done and self.declaration else "")
        ]
        if self.vendor != "postgresql":
            vendor = {"sqlite": "SQLite"}.get(self.vendor, self.vendor)
            out.append(f"{vendor}: nothing is partitioned; rows are deleted by id range.")
        for plan in reversed(self.tables):  # decisions first
            if not plan.rows:
                continue
            runs = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in plan.ranges[:4])
            more = f" and {len(plan.ranges) - 4} more" if len(plan.ranges) > 4 else ""
            where = f"ids {runs}{more}" if plan.by_id else f"by {plan.key()}"
            line = f"  {plan.table}: {plan.rows:,} {plan.label}, {where}"
            for name, _, _ in plan.partitions:
                kept = self.kept_as.get(name)
                if self.drop:
                    line += f"; partition {name} {'dropped' if done else 'to drop'}"
                else:
                    line += f"; partition {name} {'detached' if done else 'to detach'}"
                    if done and kept:
                        line += f", kept as {kept}"
            for name, kept_rows in plan.shared.items():
                line += f"; {name} stays ({kept_rows:,} other rows), the month's rows deleted"
            out.append(line)
        if not any(t.rows or t.partitions for t in self.tables):
            out.append("  Nothing: no decision predicted in it is kept.")
        if self.unique_keys:
            out.append(
                f"  {Decision._meta.db_table}{UNIQUE_SUFFIX}: {self.unique_keys:,} request-id keys"
            )
        if not done and not self.drop and any(t.partitions for t in self.tables):
            out.append(
                "Detached partitions are kept, renamed ..._retired: pg_dump them to cold "
                "storage, then DROP them (or retire with --drop)."
            )
        return out


def parse_month(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    if not match or not 1 <= int(match[2]) <= 12:
        raise InvalidInput(f"{text!r} is not a month: write it YYYY-MM, as 2026-01.")
    return int(match[1]), int(match[2])


def plan_retirement(
    year: int, month: int, *, drop: bool = False, today: tuple[int, int] | None = None
) -> Plan:
    """What retiring the month would remove, table by table; refuses a month not over yet."""
    current = today or partitions.utc_month()
    label = f"{year:04d}-{month:02d}"
    if (year, month) >= current:
        raise InvalidInput(
            f"{label} is not over: only a month before the current one "
            f"({current[0]:04d}-{current[1]:02d}) can be retired.",
            code="month_not_over",
        )
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    end = dt.datetime(*partitions.next_month(year, month), 1, tzinfo=dt.UTC)
    tables = [
        TablePlan(model, q, depth)
        for model, q, depth in referrers(Q(predicted_at__gte=start, predicted_at__lt=end))
    ]
    plan = Plan(year, month, drop, connection.vendor, tables)
    for table in tables:
        _measure(table, (year, month), current)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            sql, params = _retiring_ids(plan.decisions)
            cursor.execute(
                f"SELECT count(*) FROM {Decision._meta.db_table}{UNIQUE_SUFFIX} "
                f"WHERE id IN ({sql})",
                params,
            )
            plan.unique_keys = cursor.fetchone()[0]
    return plan


def retire_month(
    actor: roles.Actor,
    year: int,
    month: int,
    *,
    drop: bool = False,
    via: str = "command",
    today: tuple[int, int] | None = None,
) -> Plan:
    """Declare, then retire, the month's decisions and their rows: all of it or nothing.

    What was written until now is sealed first, so every row that goes is in the log,
    and from then on writers of sealed rows wait for this transaction (the sealing
    lock; the detach would make them wait anyway). Refused when nothing is left of
    the month. `today`: the current month, for tests.
    """
    with transaction.atomic():
        seal_new_records()
        plan = plan_retirement(year, month, drop=drop, today=today)
        _check_retirable(plan)
        declaration = _declare(actor, plan)
        seal_new_records()  # the declaration's record: the triggers want it sealed
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(
                    "SELECT set_config(%s, %s, true)", [RETIREMENT_SETTING, str(declaration.pk)]
                )
            for table in plan.tables:
                _delete_rows(cursor, table, plan)
            if connection.vendor == "postgresql":
                for table in plan.tables:
                    for name, _, _ in table.partitions:
                        plan.kept_as[name] = _retire_partition(cursor, table.table, name, plan)
                cursor.execute("SELECT set_config(%s, '', true)", [RETIREMENT_SETTING])
        tallies.forget()  # they counted the decisions that went
        record_event(
            RETIRED_EVENT,
            actor=actor,
            via=via,
            object_type="retirement",
            object_id=str(declaration.pk),
            month=plan.label,
            declaration=declaration.pk,
            mode=plan.mode,
            rows={t.table: t.rows for t in reversed(plan.tables) if t.rows},
            partitions={
                name: plan.kept_as.get(name) for t in plan.tables for name, _, _ in t.partitions
            },
        )
        plan.declaration = declaration
    return plan


# --- what refers to a decision ---------------------------------------------------------


def referrers(retired: Q) -> list[tuple[type[models.Model], Q, int]]:
    """Decisions and every model referring to them, through any chain of foreign keys: each
    with the filter of its rows that go (`retired`: of decisions), and its depth.

    In deletion order: deepest first, so a row goes before what it refers to.
    """
    paths: dict[type[models.Model], list[str]] = {Decision: [""]}
    depth: dict[type[models.Model], int] = {Decision: 0}
    pending = [Decision]
    while pending:
        model = pending.pop()
        for relation in model._meta.get_fields(include_hidden=True):
            if not (relation.auto_created and not relation.concrete and relation.is_relation):
                continue
            if relation.many_to_many:
                raise NotImplementedError(
                    f"{relation.related_model} has a many-to-many relation to {model}: "
                    "retirement follows foreign keys only"
                )
            referrer, name = relation.related_model, relation.field.name
            found = paths.setdefault(referrer, [])
            for path in paths[model]:
                lookup = f"{name}__{path}" if path else name
                if lookup not in found:
                    found.append(lookup)
            if depth.get(referrer, -1) < depth[model] + 1:
                depth[referrer] = depth[model] + 1
                pending.append(referrer)
    out = []
    for model, lookups in paths.items():
        q = Q()
        for lookup in lookups:
            q |= _prefixed(retired, lookup)
        out.append((model, q, depth[model]))
    return sorted(out, key=lambda item: (-item[2], item[0]._meta.label))


def _prefixed(q: Q, prefix: str) -> Q:
    """The filter `q` on decisions, read from a row that reaches them through `prefix`."""
    if not prefix:
        return q
    children = [
        _prefixed(child, prefix) if isinstance(child, Q) else (f"{prefix}__{child[0]}", child[1])
        for child in q.children
    ]
    return Q(*children, _connector=q.connector, _negated=q.negated)


# --- measuring ---------------------------------------------------------------------------


def _retiring_ids(table: TablePlan) -> tuple[str, tuple[Any, ...]]:
    """The SQL of the keys of the table's rows that go (a subquery)."""
    keys = [f.attname for f in table.model._meta.pk_fields]
    sql, params = table.queryset().values(*keys).query.sql_with_params()
    return sql, tuple(params)


def _measure(table: TablePlan, month: tuple[int, int], current: tuple[int, int]) -> None:
    """Rows, whole partitions (PostgreSQL) and id ranges of what goes of one table."""
    sql, params = _retiring_ids(table)
    name = table.table
    with connection.cursor() as cursor:
        if not table.by_id:  # rows without ids (derived ones): counted, deleted by their key
            cursor.execute(f"SELECT count(*) FROM ({sql}) AS going", params)
            table.rows = cursor.fetchone()[0]
            return
        cursor.execute(f"SELECT count(*), min(id), max(id) FROM {name} WHERE id IN ({sql})", params)
        table.rows, low, high = cursor.fetchone()
        whole: list[tuple[str, int, int]] = []
        if partitions.is_partitioned(name):
            whole = _whole_partitions(cursor, table, sql, params, month, current)
        table.partitions = whole
        if not table.rows:
            table.ranges = [(lower, upper - 1) for _, lower, upper in whole]
            return
        bounds = tuple(b for _, lower, upper in whole for b in (lower, upper))
        # Gaps and islands: consecutive rows in id order that all go make one range. (The
        # rows that go are joined, not tested with IN per row: 19 s against 0.1 s for
        # 24,000 explanation rows of 60,000.)
        outside = "".join(" AND NOT (t.id >= %s AND t.id < %s)" for _ in whole)
        cursor.execute(
            "SELECT min(id), max(id) FROM (SELECT id, gone, "
            "row_number() OVER (ORDER BY id) - row_number() OVER (PARTITION BY gone ORDER BY id) "
            "AS island FROM (SELECT t.id, CASE WHEN going.id IS NULL THEN 0 ELSE 1 END AS gone "
            f"FROM {name} t LEFT JOIN ({sql}) AS going ON going.id = t.id "
            f"WHERE t.id >= %s AND t.id <= %s{outside}) AS flagged) AS islands "
            "WHERE gone = 1 GROUP BY island ORDER BY 1",
            (*params, low, high, *bounds),
        )
        runs = [(a, b) for a, b in cursor.fetchall()]
    table.ranges = _merged(runs + [(lower, upper - 1) for _, lower, upper in whole])


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges that overlap or touch made one (a run of rows can span a detached partition):
    the triggers look up the one range starting nearest below an id."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _whole_partitions(
    cursor, table: TablePlan, sql: str, params, month: tuple[int, int], current
) -> list[tuple[str, int, int]]:
    """The month partitions whose every row goes (and the month's own, if empty): detached.

    Never the legacy partition, nor one of the current month or later (it takes rows).
    """
    name = table.table
    cursor.execute(
        f"SELECT tableoid::regclass::text, count(*) FROM {name} WHERE id IN ({sql}) GROUP BY 1",
        params,
    )
    going = dict(cursor.fetchall())
    whole = []
    for partition in partitions.partitions(name):
        of_month = partitions.month_partition(name, partition.name)
        if partition.name not in going and of_month != month:
            continue
        cursor.execute(f"SELECT count(*) FROM {partition.name}")
        total = cursor.fetchone()[0]
        past = of_month is not None and of_month < current and partition.lower is not None
        if past and total == going.get(partition.name, 0):
            whole.append((partition.name, partition.lower, partition.upper))
        elif partition.name in going:
            table.shared[partition.name] = total - going[partition.name]
    return whole


# --- declaring and deleting ----------------------------------------------------------


def _check_retirable(plan: Plan) -> None:
    decisions = plan.decisions
    if not any(t.rows or t.partitions for t in plan.tables):
        earlier = Retirement.objects.filter(month=plan.label).order_by("id").first()
        said = f" (declaration #{earlier.pk}, {earlier.declared_at:%Y-%m-%d})" if earlier else ""
        raise Conflict(
            f"Nothing of {plan.label} is left to retire: no decision predicted in it is "
            f"kept{said}.",
            code="nothing_to_retire",
        )
    seal = latest_seal()
    sealed_up_to = (seal.last_decision_id or 0) if seal else 0
    unsealed = decisions.queryset().filter(pk__gt=sealed_up_to).count()
    if unsealed:
        raise Conflict(
            f"{unsealed:,} decisions of {plan.label} are not sealed yet: retiring them would "
            "leave no trace of them in the log. Seal first (manage.py seal_records; beat "
            "seals every minute), then retire.",
            code="not_sealed",
        )


def _declare(actor: roles.Actor, plan: Plan) -> Retirement:
    """The declaration, its ranges (for the triggers) and its record in the log."""
    declared_at = declaration_time()
    tables = {t.table: t.declared() for t in reversed(plan.tables) if t.rows or t.partitions}
    if plan.unique_keys:
        tables[Decision._meta.db_table + UNIQUE_SUFFIX] = {
            "label": "request-id keys",
            "rows": plan.unique_keys,
            "ranges": tables[Decision._meta.db_table]["ranges"],
            "partitions": [],
        }
    user = actor.user if actor.user.is_authenticated else None
    declaration = Retirement(
        month=plan.label,
        declared_at=declared_at,
        declared_by=user,
        actor_name=actor.label,
        mode=plan.mode,
        tables=tables,
    )
    declaration.save(force_insert=True)
    RetiredRange.objects.bulk_create(
        RetiredRange(retirement=declaration, table_name=name, first_id=a, last_id=b)
        for name, entry in tables.items()
        for a, b in entry["ranges"]
    )
    records.append("retirement", [declaration.pk])
    return declaration


def _delete_rows(cursor, table: TablePlan, plan: Plan) -> None:
    """The table's retired rows outside whole partitions; exactly as many as declared."""
    expected = table.rows - sum(_count(cursor, name) for name, _, _ in table.partitions)
    files = _files(table)
    if table.model is Decision and plan.unique_keys:
        sql, params = _retiring_ids(table)
        cursor.execute(f"DELETE FROM {table.table}{UNIQUE_SUFFIX} WHERE id IN ({sql})", params)
    if not expected:
        return
    sql, params = _retiring_ids(table)
    outside = "".join(" AND NOT (id >= %s AND id < %s)" for _ in table.partitions)
    bounds = tuple(b for _, lower, upper in table.partitions for b in (lower, upper))
    cursor.execute(
        f"DELETE FROM {table.table} WHERE {table.key()} IN ({sql}){outside}", (*params, *bounds)
    )
    deleted = cursor.rowcount
    if deleted != expected:
        raise Conflict(
            f"{table.table}: {deleted} rows deleted where {expected} were declared; rows "
            f"changed while {plan.label} was retired. Nothing was retired: run it again.",
            code="retirement_raced",
        )
    storage_names = [name for name in files if name]
    if storage_names:
        transaction.on_commit(lambda: _remove_files(table.model, storage_names))


def _retire_partition(cursor, table: str, name: str, plan: Plan) -> str | None:
    try:
        return partitions.retire_partition(cursor, table, name, drop=plan.drop)
    except OperationalError as error:
        if "lock timeout" not in str(error):
            raise
        raise Conflict(
            f"{table} is busy (a long reader, a verification?): detaching {name} gave up "
            f"after {partitions.LOCK_TIMEOUT}. Nothing of {plan.label} was retired: run it "
            "again.",
            code="table_busy",
        ) from error


def _count(cursor, name: str) -> int:
    cursor.execute(f"SELECT count(*) FROM {name}")
    return cursor.fetchone()[0]


def _files(table: TablePlan) -> list[str]:
    """The stored files of the rows that go (a decision notice's PDF), removed on commit."""
    fields = [f.name for f in table.model._meta.concrete_fields if isinstance(f, models.FileField)]
    if not fields:
        return []
    return [name for row in table.queryset().values_list(*fields) for name in row if name]


def _remove_files(model: type[models.Model], names: list[str]) -> None:
    storage = next(
        f.storage for f in model._meta.concrete_fields if isinstance(f, models.FileField)
    )
    for name in names:
        storage.delete(name)
