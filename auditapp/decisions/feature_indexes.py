"""Opt-in indexes on one model's input features, for searches by a value few decisions have.

`inputs` is one JSON column, so a search by a feature value reads every decision
of the period unless an index covers that feature: a value no one has took
0.7 s at a million decisions. An index costs every insert of its model, so they
are made on request (`manage.py index_feature`), one per (model, feature), and
partial on the model so that other models' inserts do not pay. The search names
the model by id (`registered_model_id = N`) so that PostgreSQL can use them.

PostgreSQL only: the embedded SQLite default is for one host and small volumes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.db import connection
from django.db.models import Expression, FloatField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from psycopg import sql

from auditapp import partitions
from auditapp.accounts.audit import record_event
from auditapp.accounts.roles import Actor
from auditapp.errors import InvalidInput
from auditapp.registry.models import RegisteredModel

TABLE = "decisions_decision"
PREFIX = "decisions_feature_"
NUMERIC = ("numeric", "integer")


def search_expression(feature: str, kind: str) -> Expression | None:
    """What the search compares a feature's value by, and what its index holds.

    A number is compared as `(inputs ->> feature)::double precision`, not as JSON:
    PostgreSQL keeps no statistics it can use for a range of JSON values, guesses a
    third of the decisions match, and walks the time index to its end rather than
    use the feature index (0.5 s at a million, for a value no one has). None: the
    JSON value itself (categories and yes/no, compared for equality).
    """
    if kind not in NUMERIC:
        return None
    return Cast(KT(f"inputs__{feature}"), FloatField())


# The same two expressions as SQL (PostgreSQL matches an index by its expression).
EXPRESSION = {True: "((inputs ->> {feature})::double precision)", False: "(inputs -> {feature})"}
# Statistics of the expression, beside its index: the planner ignores those a partial index
# gathers, and without them it guessed a third of the decisions match any value and kept
# walking the time index (0.5 s at a million; 0.04 ms with them, by the feature index).
# A partition scan reads the partition's own, so each partition gets them
# (partitions.create_ahead copies them to a month created later).
STATISTICS = "CREATE STATISTICS IF NOT EXISTS {name} ON {expression} FROM {table}"


@dataclass(frozen=True)
class FeatureIndex:
    name: str
    model: str
    feature: str
    size_bytes: int
    valid: bool  # False while CREATE INDEX CONCURRENTLY runs, or after it failed


def index_name(model_id: int, feature: str) -> str:
    """Short and fixed in length: feature names may be longer than PostgreSQL's 63 bytes."""
    digest = hashlib.sha256(feature.encode()).hexdigest()[:12]
    return f"{PREFIX}{model_id}_{digest}"


def _require_postgresql() -> None:
    if connection.vendor != "postgresql":
        raise InvalidInput(
            "Feature indexes are for PostgreSQL (DATABASE_URL); the embedded SQLite "
            "default searches without them.",
            code="postgresql_only",
        )


def _feature_of(model_name: str, feature: str) -> tuple[RegisteredModel, str]:
    """The model, and the feature's type as the search reads it (its newest version's)."""
    model = RegisteredModel.objects.filter(name=model_name).first()
    if model is None:
        raise InvalidInput(f"There is no model {model_name!r}.", code="unknown_model")
    types: dict[str, str] = {}
    sensitive: set[str] = set()
    for version in model.versions.only("schema").order_by("pk"):
        types.update({f.name: f.type for f in version.parsed_schema.features})
        sensitive |= version.parsed_schema.sensitive_names
    names = set(types)
    if feature not in names:
        raise InvalidInput(
            f"{feature!r} is not a feature of {model_name!r}; its features are "
            f"{', '.join(sorted(names)) or 'none yet'}.",
            code="unknown_feature",
        )
    if feature in sensitive:
        raise InvalidInput(
            f"{feature!r} is sensitive: its values are stored encrypted, not in the inputs an "
            "index reads, and an exact search on it uses its blind index already.",
            code="sensitive_feature",
        )
    return model, types[feature]


def create_feature_index(actor: Actor, model_name: str, feature: str) -> FeatureIndex:
    """Build the index without locking out writers (CONCURRENTLY); audited.

    A partitioned table (auditapp/partitions.py) cannot index itself concurrently:
    its index is declared on the parent alone, then built on each partition
    concurrently and attached; it is valid once every partition's is. Partitions
    created later get it with the others.
    """
    _require_postgresql()
    model, kind = _feature_of(model_name, feature)
    numeric = kind in NUMERIC
    name = index_name(model.pk, feature)
    if partitions.is_partitioned(TABLE):
        _build(name, TABLE, model.pk, feature, numeric, only=True)
        attached = _partitions_indexed(name)
        for partition in partitions.partitions(TABLE):
            if partition.name in attached:  # built before, or created with the partition
                continue
            child = name + partition.name.removeprefix(TABLE)
            _drop_if_invalid(child, partition.name)
            _build(child, partition.name, model.pk, feature, numeric, concurrently=True)
            with connection.cursor() as cursor:
                cursor.execute(
                    sql.SQL("ALTER INDEX {} ATTACH PARTITION {}")
                    .format(sql.Identifier(name), sql.Identifier(child))
                    .as_string(cursor.connection)
                )
    else:
        _drop_if_invalid(name)  # a build interrupted earlier leaves an invalid index behind
        _build(name, TABLE, model.pk, feature, numeric, concurrently=True)
    _gather_statistics(name, feature, numeric)
    record_event("search_index.created", actor=actor, model=model_name, feature=feature, index=name)
    (index,) = [i for i in feature_indexes() if i.name == name]
    return index


def _partitions_indexed(name: str) -> set[str]:
    """The partitions whose own index is attached to the partitioned index `name`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT x.indrelid::regclass::text FROM pg_inherits i "
            "JOIN pg_index x ON x.indexrelid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            [name],
        )
        return {row[0] for row in cursor.fetchall()}


def _build(
    name: str,
    table: str,
    model_id: int,
    feature: str,
    numeric: bool,
    concurrently=False,
    only=False,
) -> None:
    statement = sql.SQL(
        "CREATE INDEX {concurrently} IF NOT EXISTS {name} ON {only} {table} ("
        + EXPRESSION[numeric]
        + ", predicted_at) WHERE registered_model_id = {model}"
    ).format(
        concurrently=sql.SQL("CONCURRENTLY" if concurrently else ""),
        only=sql.SQL("ONLY" if only else ""),
        name=sql.Identifier(name),
        table=sql.Identifier(table),
        feature=sql.Literal(feature),
        model=sql.Literal(model_id),
    )
    with connection.cursor() as cursor:
        cursor.execute(statement.as_string(cursor.connection))


def statistics_name(index: str) -> str:
    return f"{index}_stats"


def _gather_statistics(name: str, feature: str, numeric: bool) -> None:
    """The expression's statistics on the table, copied to each partition as a month
    created later gets them, then ANALYZE (which a partitioned table passes on)."""
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL(STATISTICS)
            .format(
                name=sql.Identifier(statistics_name(name)),
                expression=sql.SQL(EXPRESSION[numeric]).format(feature=sql.Literal(feature)),
                table=sql.Identifier(TABLE),
            )
            .as_string(cursor.connection)
        )
        for partition in partitions.partitions(TABLE):
            partitions.copy_statistics(cursor, TABLE, partition.name)
    partitions.analyze(TABLE)


def drop_feature_index(actor: Actor, model_name: str, feature: str) -> bool:
    _require_postgresql()
    model, _kind = _feature_of(model_name, feature)
    name = index_name(model.pk, feature)
    if not any(i.name == name for i in feature_indexes()):
        return False
    # A partitioned index goes with its partitions' and not concurrently (PostgreSQL
    # cannot): the table is locked while they are unlinked, a moment.
    concurrently = "" if partitions.is_partitioned(TABLE) else "CONCURRENTLY"
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("DROP INDEX {} IF EXISTS {}")
            .format(sql.SQL(concurrently), sql.Identifier(name))
            .as_string(cursor.connection)
        )
        cursor.execute(
            "SELECT stxname FROM pg_statistic_ext WHERE stxname LIKE %s",
            [statistics_name(name).replace("_", r"\_") + "%"],
        )
        for (statistics,) in cursor.fetchall():
            cursor.execute(
                sql.SQL("DROP STATISTICS IF EXISTS {}")
                .format(sql.Identifier(statistics))
                .as_string(cursor.connection)
            )
    record_event("search_index.dropped", actor=actor, model=model_name, feature=feature, index=name)
    return True


def _drop_if_invalid(name: str, table: str = TABLE) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = %s::regclass AND c.relname = %s",
            [table, name],
        )
        row = cursor.fetchone()
    if row is not None and row[0]:
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}")
                .format(sql.Identifier(name))
                .as_string(cursor.connection)
            )


def feature_indexes() -> list[FeatureIndex]:
    """The feature indexes that exist, with the model and feature each covers."""
    _require_postgresql()
    wanted = {}
    for model_id, model_name, schemas in _models_and_features():
        for feature in schemas:
            wanted[index_name(model_id, feature)] = (model_name, feature)
    with connection.cursor() as cursor:
        cursor.execute(
            # A partitioned index has no size of its own: its partitions' are summed.
            "SELECT c.relname, (SELECT sum(pg_relation_size(relid))::bigint "
            "FROM pg_partition_tree(c.oid)), i.indisvalid "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = %s::regclass AND c.relname LIKE %s ORDER BY c.relname",
            [TABLE, PREFIX + "%"],
        )
        rows = cursor.fetchall()
    return [
        FeatureIndex(name, *wanted.get(name, ("?", "?")), size_bytes=size, valid=valid)
        for name, size, valid in rows
    ]


def _models_and_features() -> list[tuple[int, str, set[str]]]:
    result = []
    for model in RegisteredModel.objects.prefetch_related("versions"):
        names: set[str] = set()
        for version in model.versions.all():
            names |= set(version.parsed_schema.names)
        result.append((model.pk, model.name, names))
    return result
