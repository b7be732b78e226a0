"""Monthly partitions of an append-only table on PostgreSQL, by ranges of its id.

A table of records keeps its single-column `id` primary key, so the foreign keys
that point at it stay, and the log keeps sealing and verifying in id order. The
ids of month M (UTC, by the database's clock at insert) are drawn from a sequence
of that month and offset by base(M) = YYYYMM * 10^9, so that the partition of
month M holds exactly [base(M), base(M + 1)) and a person reads the month off an
id (202612000004567: December 2026's 4,567th). Ids stay below 2^53 (safe in JSON)
and grow with time, as the sealer's horizon needs; a month holds a billion. The rows from
before partitioning stay where they are: the old table becomes the partition
`<table>_legacy`, FROM MINVALUE to the first month's first id, without a copy.

PostgreSQL cannot enforce a unique key across partitions unless it holds the
partition key, so a table with another unique key (a decision's model and
request_id) keeps it in a side table, `<table>_unique`, filled by a trigger on
insert: a key used twice still fails with a unique violation.

Partitions are created a few months ahead (the migration, then the beat task
`partitions.create_ahead`); an insert in a month without one fails with a message
saying so. A partition is named `<table>_pYYYYMM`, its sequence `<table>_id_YYYYMM`.
On SQLite nothing is partitioned: these functions are for PostgreSQL only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import connection, migrations, transaction

MONTH_SPAN = 10**9  # ids a month may hold: the id's last nine digits
AHEAD = 3  # months created beyond the current one
LOCK_TIMEOUT = "10s"  # how long creating a partition waits for the table
LEGACY_SUFFIX = "_legacy"


def base(year: int, month: int) -> int:
    """The first id of a month: month 2026-12 starts at 202612 * 10^9."""
    return (100 * year + month) * MONTH_SPAN


def month_of_id(value: int) -> tuple[int, int]:
    """The month whose partition holds an id (December's reaches up to January's base)."""
    year, month = divmod(value // MONTH_SPAN, 100)
    if month == 0:
        return year - 1, 12
    return year, min(month, 12)


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def months_from(year: int, month: int, count: int) -> list[tuple[int, int]]:
    months = [(year, month)]
    while len(months) < count:
        months.append(next_month(*months[-1]))
    return months


def partition_name(table: str, year: int, month: int) -> str:
    return f"{table}_p{year:04d}{month:02d}"


def sequence_name(table: str, year: int, month: int) -> str:
    return f"{table}_id_{year:04d}{month:02d}"


def utc_month(moment: dt.datetime | None = None) -> tuple[int, int]:
    moment = (moment or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return moment.year, moment.month


NEXT_ID_FUNCTION = """
CREATE OR REPLACE FUNCTION {table}_next_id() RETURNS bigint AS $$
DECLARE
    -- The clock now, not the transaction's start: an id is drawn once the sealing
    -- lock is held, and must not fall below one the sealer has already read.
    moment timestamp := clock_timestamp() AT TIME ZONE 'UTC';
    month_key bigint := to_char(moment, 'YYYYMM')::bigint;
    sequence text := '{table}_id_' || to_char(moment, 'YYYYMM');
BEGIN
    IF to_regclass(sequence) IS NULL THEN
        RAISE EXCEPTION 'no partition of {table} for the month %: create it with '
            '"manage.py create_partitions" (Celery beat runs partitions.create_ahead)',
            to_char(moment, 'YYYY-MM')
            USING HINT = 'The partition ' || '{table}_p' || to_char(moment, 'YYYYMM')
                || ' and its id sequence ' || sequence || ' are missing.';
    END IF;
    RETURN month_key * {span} + nextval(sequence);
END;
$$ LANGUAGE plpgsql VOLATILE;
"""

# The (model, request_id) key of every inserted row goes to <table>_unique, whose primary
# key refuses a second one. Once per statement, from its transition table: a row-level
# trigger ran an INSERT per decision (26 ms of a 1,000-decision COPY's 50 ms).
UNIQUE_KEY_FUNCTION = """
CREATE OR REPLACE FUNCTION {table}_unique_key() RETURNS trigger AS $$
BEGIN
    INSERT INTO {table}_unique ({columns}, id) SELECT {columns}, id FROM inserted_rows;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""
UNIQUE_KEY_TRIGGER = (
    "CREATE TRIGGER {table}_unique_key AFTER INSERT ON {table} "
    "REFERENCING NEW TABLE AS inserted_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION {table}_unique_key()"
)


def keep_unique_keys_per_statement(schema_editor, table: str, unique: tuple[str, ...]) -> None:
    """(Re)create <table>'s unique-key trigger as the statement-level one."""
    cursor = schema_editor.connection.cursor()
    cursor.execute(f"DROP TRIGGER IF EXISTS {table}_unique_key ON {table}")
    _unique_key_trigger(cursor, table, unique)


def _unique_key_trigger(cursor, table: str, unique: tuple[str, ...]) -> None:
    cursor.execute(UNIQUE_KEY_FUNCTION.format(table=table, columns=", ".join(unique)))
    cursor.execute(UNIQUE_KEY_TRIGGER.format(table=table))


@dataclass(frozen=True)
class Partition:
    name: str
    lower: int | None  # None: MINVALUE (the legacy partition)
    upper: int
    rows_estimate: int | None  # None: not analyzed yet


def _month_partition(cursor, table: str, year: int, month: int, lower: int | None = None) -> bool:
    """Create one month's partition and its id sequence unless they exist; True if created."""
    name = partition_name(table, year, month)
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    if cursor.fetchone()[0]:
        return False
    start = base(year, month) if lower is None else lower
    end = base(*next_month(year, month))
    sequence = sequence_name(table, year, month)
    cursor.execute(
        f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ({start}) TO ({end})",
    )
    # Dropped with its partition. The month's first id, base(M) + 0, is left unused.
    cursor.execute(
        f"CREATE SEQUENCE {sequence} AS bigint MINVALUE 1 MAXVALUE {MONTH_SPAN - 1} "
        f"START {max(1, start - base(year, month))} OWNED BY {name}.id",
    )
    # Statement triggers are not cloned to partitions: a TRUNCATE of one is refused here.
    cursor.execute(
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {name} "
        "FOR EACH STATEMENT EXECUTE FUNCTION attest_refuse_change()",
    )
    copy_statistics(cursor, table, name)
    return True


def copy_statistics(cursor, table: str, partition: str) -> None:
    """The parent's statistics objects on expressions, made for a new partition too: a
    partition's scan is planned with its own (decisions/feature_indexes.py says why
    they exist)."""
    cursor.execute(
        "SELECT stxname, pg_get_statisticsobjdef_expressions(oid) FROM pg_statistic_ext "
        "WHERE stxrelid = %s::regclass",
        [table],
    )
    for statistics, expressions in cursor.fetchall():
        if not expressions:
            continue
        columns = ", ".join(f"({expression})" for expression in expressions)
        suffix = partition.removeprefix(table)
        cursor.execute(
            f'CREATE STATISTICS IF NOT EXISTS "{statistics}{suffix}" ON {columns} FROM {partition}'
        )


def create_ahead(
    table: str, months: int = AHEAD, today: tuple[int, int] | None = None
) -> list[str]:
    """Create the partitions of this month and the next `months`; idempotent.

    Returns the partitions it created. A month that exists is only looked up, so
    a run that has nothing to do takes no lock on the table. Creating one locks
    the table exclusively for a moment: behind a long reader (a verification) it
    gives up after LOCK_TIMEOUT rather than hold every insert queued behind it,
    and the next run tries again, months ahead of need.

    A month before the clock's is never created, whatever `today` says: its rows
    were written already, and a retired month's partition (detached or dropped,
    decisions/retention.py) must not come back empty to take rows of its range.
    """
    year, month = today or utc_month()
    created = []
    for y, m in months_from(year, month, months + 1):
        if (y, m) < utc_month():
            continue
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            lower = _lower_bound(cursor, table, y, m)
            if _month_partition(cursor, table, y, m, lower):
                created.append(partition_name(table, y, m))
    return created


def _lower_bound(cursor, table: str, year: int, month: int) -> int | None:
    """Where the month's partition starts: its base, unless the legacy one reaches into it."""
    cursor.execute(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c "
        "WHERE c.relname = %s AND c.relispartition",
        [table + LEGACY_SUFFIX],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    _lower, legacy_upper = _bounds(row[0])
    if base(year, month) < legacy_upper < base(*next_month(year, month)):
        return legacy_upper
    return None


RETIRED_SUFFIX = "_retired"


def retire_partition(cursor, table: str, name: str, *, drop: bool) -> str | None:
    """Detach a partition of an expired month; drop it, or keep it renamed `<name>_retired`
    for an operator to dump to cold storage and drop. Returns the name it is kept under.

    DETACH refuses while a row elsewhere still refers to one of its rows (the foreign
    keys point at the parent): whoever calls deletes those first, in the same transaction.
    """
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending checks: ALTER would refuse
    cursor.execute(f"ALTER TABLE {table} DETACH PARTITION {name}")
    # Its foreign keys stay its own once detached: to the live tables they would pin the
    # rows it referred to (a month's results pin its decisions' partition).
    cursor.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f' "
        "AND conparentid = 0",
        [name],
    )
    for (constraint,) in cursor.fetchall():
        cursor.execute(f'ALTER TABLE {name} DROP CONSTRAINT "{constraint}"')
    if drop:
        cursor.execute(f"DROP TABLE {name}")  # its id sequence too
        return None
    kept = name + RETIRED_SUFFIX
    cursor.execute(f"ALTER TABLE {name} RENAME TO {kept}")
    return kept


def month_partition(table: str, name: str) -> tuple[int, int] | None:
    """The month of a partition named `<table>_pYYYYMM`; None for the legacy one."""
    suffix = name.removeprefix(f"{table}_p")
    if suffix == name or len(suffix) != 6 or not suffix.isdigit():
        return None
    return int(suffix[:4]), int(suffix[4:])


def partitions(table: str) -> list[Partition]:
    """The partitions of a table, in id order, with their bounds."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples::bigint "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [table],
        )
        rows = cursor.fetchall()
    found = []
    for name, bound, estimate in rows:
        estimate = None if estimate < 0 else estimate
        found.append(Partition(name, *_bounds(bound), rows_estimate=estimate))
    return sorted(found, key=lambda p: -1 if p.lower is None else p.lower)


def _bounds(text: str) -> tuple[int | None, int]:
    """FOR VALUES FROM (MINVALUE) TO ('123'), as (None, 123)."""
    lower_text, upper_text = text.split(" TO ")
    lower = lower_text.split("(", 1)[1].rstrip(")").strip("'")
    upper = upper_text.split("(", 1)[1].rstrip(")").strip("'")
    return (None if lower == "MINVALUE" else int(lower)), int(upper)


def analyze(table: str, using=connection) -> None:
    """Statistics of a partitioned table as a whole (and of its partitions, which ANALYZE
    visits too). Autovacuum keeps each partition's but never the parent's, and without
    them the planner misjudges joins over the table: the plain search, a page of 51
    decisions, was planned as a sort of the whole period (0.7 s at a million, 0.2 ms
    once analyzed). The migration and the beat task call it."""
    with using.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")


def partitioned_tables() -> list[str]:
    """The tables partitioned by these functions (their migrations say which)."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE to_regprocedure(c.relname || '_next_id()') IS NOT NULL ORDER BY c.relname"
        )
        return [row[0] for row in cursor.fetchall()]


def is_partitioned(table: str) -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [table])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


# --- the migration -------------------------------------------------------------------


def _incoming_foreign_keys(cursor, table: str) -> list[tuple[str, str, str]]:
    cursor.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND confrelid = %s::regclass AND conparentid = 0 ORDER BY conname",
        [table],
    )
    return cursor.fetchall()


def _drop_foreign_keys(cursor, keys) -> None:
    for referrer, name, _definition in keys:
        cursor.execute(f'ALTER TABLE {referrer} DROP CONSTRAINT "{name}"')


def _add_foreign_keys(cursor, keys) -> None:
    """Against the parent now; each is checked again (a scan of the referring table)."""
    for referrer, name, definition in keys:
        cursor.execute(f'ALTER TABLE {referrer} ADD CONSTRAINT "{name}" {definition}')


def _indexes(cursor, table: str) -> list[tuple[str, bool, bool, str, str | None]]:
    """(name, primary?, unique?, definition after USING, constraint name) of its indexes."""
    cursor.execute(
        "SELECT c.relname, i.indisprimary, i.indisunique, pg_get_indexdef(i.indexrelid), "
        "con.conname "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid "
        "WHERE i.indrelid = %s::regclass ORDER BY c.relname",
        [table],
    )
    return [
        (name, primary, unique, definition.split(" USING ", 1)[1], constraint)
        for name, primary, unique, definition, constraint in cursor.fetchall()
    ]


def partitioning(table: str, unique: tuple[str, ...] = ()) -> migrations.RunPython:
    """A migration's operation: partition `table` on PostgreSQL (reversibly); SQLite as it is."""

    def forward(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            partition_table(schema_editor, table, unique=unique)

    def reverse(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            unpartition_table(schema_editor, table)

    return migrations.RunPython(forward, reverse)


def partition_table(
    schema_editor, table: str, unique: tuple[str, ...] = (), today: tuple[int, int] | None = None
) -> None:
    """Turn `table` into a table partitioned by RANGE (id); its rows become `<table>_legacy`.

    The table's unique constraint over `unique` (if any) stays on the legacy
    partition, and is kept for every row in `<table>_unique`.
    """
    cursor = schema_editor.connection.cursor()
    legacy = table + LEGACY_SUFFIX
    year, month = today or utc_month()
    cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    cursor.execute(f"SELECT max(id) FROM {table}")
    (highest,) = cursor.fetchone()
    legacy_upper = max(base(year, month), (highest or 0) + 1)
    if legacy_upper >= base(*next_month(year, month)):
        raise RuntimeError(f"{table} holds ids beyond this month's range; the clock is behind?")
    incoming = _incoming_foreign_keys(cursor, table)
    _drop_foreign_keys(cursor, incoming)
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        # (conparentid: not the per-partition clones of a key to a partitioned table)
        "WHERE contype IN ('f', 'c') AND conrelid = %s::regclass AND conparentid = 0 "
        "ORDER BY conname",
        [table],
    )
    outgoing = cursor.fetchall()
    indexes = _indexes(cursor, table)
    unique_index = _unique_index(indexes, unique)
    cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP IDENTITY IF EXISTS")
    # Row triggers are cloned from the parent on ATTACH: the old one would clash.
    cursor.execute(f"DROP TRIGGER {table}_append_only ON {table}")
    cursor.execute(f"ALTER TABLE {table} RENAME TO {legacy}")
    for name, primary, unique_one, _definition, constraint in indexes:
        if name == unique_index:
            continue
        if unique_one and not primary:
            raise RuntimeError(f"{name} is unique without the id: a partitioned table cannot be")
        if len(name) > 63 - len(LEGACY_SUFFIX):
            raise RuntimeError(f"index name {name} is too long to keep beside its partition's")
        if constraint:
            cursor.execute(
                f'ALTER TABLE {legacy} RENAME CONSTRAINT "{constraint}" TO '
                f'"{constraint}{LEGACY_SUFFIX}"'
            )
        else:
            cursor.execute(f'ALTER INDEX "{name}" RENAME TO "{name}{LEGACY_SUFFIX}"')

    cursor.execute(
        f"CREATE TABLE {table} (LIKE {legacy} INCLUDING DEFAULTS INCLUDING STORAGE "
        "INCLUDING COMMENTS) PARTITION BY RANGE (id)",
    )
    cursor.execute(NEXT_ID_FUNCTION.format(table=table, span=MONTH_SPAN))
    cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT {table}_next_id()")
    for name, primary, _unique, definition, constraint in indexes:
        if primary:
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{constraint}" PRIMARY KEY (id)')
        elif name != unique_index:
            cursor.execute(f'CREATE INDEX "{name}" ON {table} USING {definition}')
    for name, definition in outgoing:
        cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    cursor.execute(
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION attest_refuse_change()",
    )
    cursor.execute(
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION attest_refuse_change()",
    )
    # The legacy rows' own indexes and constraints match the parent's: they are
    # attached, not built again; only the range is checked (one scan).
    cursor.execute(
        f"ALTER TABLE {table} ATTACH PARTITION {legacy} "
        f"FOR VALUES FROM (MINVALUE) TO ({legacy_upper})",
    )
    for y, m in months_from(year, month, AHEAD + 1):
        lower = legacy_upper if (y, m) == (year, month) else None
        _month_partition(cursor, table, y, m, lower)
    if unique:
        _unique_side_table(cursor, table, unique)
    _add_foreign_keys(cursor, incoming)
    analyze(table, schema_editor.connection)  # the new parent's statistics


def _unique_index(indexes, unique: tuple[str, ...]) -> str | None:
    if not unique:
        return None
    wanted = f"btree ({', '.join(unique)})"
    for name, _primary, _unique, definition, constraint in indexes:
        if constraint and definition == wanted:
            return name
    raise RuntimeError(f"no unique constraint over {unique}")


def _unique_side_table(cursor, table: str, unique: tuple[str, ...]) -> None:
    columns = ", ".join(unique)
    cursor.execute(
        f"CREATE TABLE {table}_unique AS SELECT {columns}, id FROM {table} WITH NO DATA",
    )
    cursor.execute(
        f"ALTER TABLE {table}_unique ADD CONSTRAINT {table}_unique_pkey PRIMARY KEY ({columns})",
    )
    cursor.execute(f"INSERT INTO {table}_unique SELECT {columns}, id FROM {table}")
    _unique_key_trigger(cursor, table, unique)


def unpartition_table(schema_editor, table: str) -> None:
    """The reverse of partition_table: every row back in one plain table, ids kept."""
    cursor = schema_editor.connection.cursor()
    legacy = table + LEGACY_SUFFIX
    cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    incoming = _incoming_foreign_keys(cursor, table)
    _drop_foreign_keys(cursor, incoming)
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND conrelid = %s::regclass AND conparentid = 0 ORDER BY conname",
        [table],
    )
    outgoing = cursor.fetchall()
    cursor.execute(f"DROP TABLE IF EXISTS {table}_unique")
    cursor.execute(f"DROP FUNCTION IF EXISTS {table}_unique_key() CASCADE")
    cursor.execute(f"ALTER TABLE {table} DETACH PARTITION {legacy}")
    # Detached, the legacy rows' foreign keys stay (as its own, no longer the parent's).
    cursor.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        [table],
    )
    columns = ", ".join(row[0] for row in cursor.fetchall())
    cursor.execute(f"INSERT INTO {legacy} ({columns}) SELECT {columns} FROM {table}")
    # Its deferred foreign key checks now, or the table cannot be altered below.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cursor.execute(f"DROP TABLE {table}")  # its partitions and their sequences too
    cursor.execute(f"DROP FUNCTION IF EXISTS {table}_next_id()")
    cursor.execute(f"ALTER TABLE {legacy} RENAME TO {table}")
    for name, _primary, _unique, _definition, constraint in _indexes(cursor, table):
        if constraint and constraint.endswith(LEGACY_SUFFIX):
            original = constraint.removesuffix(LEGACY_SUFFIX)
            cursor.execute(f'ALTER TABLE {table} RENAME CONSTRAINT "{constraint}" TO "{original}"')
        elif name.endswith(LEGACY_SUFFIX):
            cursor.execute(f'ALTER INDEX "{name}" RENAME TO "{name.removesuffix(LEGACY_SUFFIX)}"')
    cursor.execute(
        "SELECT conname FROM pg_constraint WHERE contype = 'f' AND conrelid = %s::regclass "
        "AND conparentid = 0",
        [table],
    )
    kept = {row[0] for row in cursor.fetchall()}
    for name, definition in outgoing:
        if name not in kept:
            cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    cursor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    cursor.execute(
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION attest_refuse_change()",
    )
    cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")
    cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
    cursor.execute(
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
        f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)",
    )
    _add_foreign_keys(cursor, incoming)
