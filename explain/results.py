"""Storing and verifying explanation results: plain service functions over the ORM.

The workers' write path (explain.storing) inserts results here; a verifier reads
them back here. No Celery.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

import orjson
from django.db import connection
from django.db.models import F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce

from auditapp.accounts.records import RecordKind, record_hash, register, write
from auditapp.registry.models import ModelVersion
from explain import packing, records
from explain.engine import ExplanationResult as Computed
from explain.models import Explanation, ExplanationConfig, ExplanationResult


@dataclass
class Stored:
    """A result as inserted, with the values its document is built from."""

    id: int
    decision_id: int
    values: dict

    def document(self) -> dict:
        return records.result_document(self.values)


def insert_results(
    model_version: ModelVersion,
    method: str,
    computed: Iterable[tuple[int, Computed]],
    duration_ms: float | None,
    computed_at: datetime,
) -> list[Stored]:
    """Insert one result per (decision id, successful engine result), in one statement.

    The configurations they name are found, or inserted once, first.
    """
    computed = list(computed)
    if not computed:
        return []
    names = model_version.parsed_schema.names
    digests = {}  # id(config object) -> digest: a batch's rows share one object
    keyed = []
    for decision_id, outcome in computed:
        key = (id(outcome.config), outcome.explainer, outcome.library_version, outcome.output_space)
        if key not in digests:
            digests[key] = records.config_digest(
                method,
                outcome.explainer,
                outcome.library_version,
                outcome.output_space,
                outcome.config,
            )
        kept = records.stored_quality(outcome.quality, outcome.config)
        if kept is not outcome.quality:
            outcome = replace(outcome, quality=kept)  # the caller's keeps it whole
        keyed.append((decision_id, outcome, digests[key]))
    config_ids = _config_ids(model_version, method, {d: o for _, o, d in keyed})
    decision_ids = [decision_id for decision_id, _, _ in keyed]
    if connection.vendor == "postgresql" and len(set(decision_ids)) == len(decision_ids):
        ids = _insert_postgresql(keyed, config_ids, names, duration_ms, computed_at)
    else:
        ids = _insert_portable(keyed, config_ids, names, duration_ms, computed_at)
    stored = [
        Stored(pk, decision_id, _values(decision_id, method, outcome, computed_at))
        for pk, (decision_id, outcome, _) in zip(ids, keyed, strict=True)
    ]
    # Into the log in the same transaction. The document built here equals the one
    # rebuilt from the stored row (tests/explain/test_results.py): no read back.
    write(
        EXPLANATION.name,
        [(s.id, record_hash(EXPLANATION.name, s.id, s.document())) for s in stored],
    )
    return stored


# One statement for a batch on PostgreSQL: what every row shares is sent once, the rest
# as one JSON recordset (the packed attributions in base64). Django's bulk_create spends
# more time building and binding its parameters than the database needs to insert them.
INSERT_SQL = """
INSERT INTO {table} (decision_id, config_id, base_value, attributions, quality,
                     seed, duration_ms, computed_at)
SELECT v.decision_id, v.config_id, v.base_value, decode(v.attributions, 'base64'),
       v.quality, v.seed, %s, %s
FROM jsonb_to_recordset(%s::jsonb) AS v(decision_id bigint, config_id bigint,
     base_value double precision, attributions text, quality jsonb, seed bigint)
RETURNING id, decision_id
"""


def _insert_postgresql(keyed, config_ids, names, duration_ms, computed_at) -> list[int]:
    rows = [
        {
            "decision_id": decision_id,
            "config_id": config_ids[digest],
            "base_value": outcome.base_value,
            "attributions": base64.b64encode(packing.pack(outcome.attributions, names)).decode(),
            "quality": outcome.quality,
            "seed": outcome.seed,
        }
        for decision_id, outcome, digest in keyed
    ]
    sql = INSERT_SQL.format(table=ExplanationResult._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql, [duration_ms, computed_at, orjson.dumps(rows).decode()])
        inserted = dict((decision_id, pk) for pk, decision_id in cursor.fetchall())
    return [inserted[decision_id] for decision_id, _, _ in keyed]


def _insert_portable(keyed, config_ids, names, duration_ms, computed_at) -> list[int]:
    rows = [
        ExplanationResult(
            decision_id=decision_id,
            config_id=config_ids[digest],
            base_value=outcome.base_value,
            attributions=packing.pack(outcome.attributions, names),
            quality=outcome.quality,
            seed=outcome.seed,
            duration_ms=duration_ms,
            computed_at=computed_at,
        )
        for decision_id, outcome, digest in keyed
    ]
    ExplanationResult.objects.bulk_create(rows)
    return [row.pk for row in rows]


def _values(decision_id: int, method: str, outcome: Computed, computed_at: datetime) -> dict:
    return {
        "decision_id": decision_id,
        "method": method,
        "explainer": outcome.explainer,
        "library_version": outcome.library_version,
        "output_space": outcome.output_space,
        "config": outcome.config,
        "attributions": outcome.attributions,
        "base_value": outcome.base_value,
        "quality": outcome.quality,
        "seed": outcome.seed,
        "computed_at": computed_at,
    }


def _config_ids(model_version, method: str, by_digest: dict[str, Computed]) -> dict[str, int]:
    """digest -> id of the configuration rows, inserting those not stored yet.

    A concurrent worker may insert the same configuration: the unique constraint
    keeps one row and both read its id.
    """
    found = _stored_configs(model_version, method, by_digest)
    missing = [digest for digest in by_digest if digest not in found]
    if missing:
        ExplanationConfig.objects.bulk_create(
            [_config_row(model_version, method, d, by_digest[d]) for d in missing],
            ignore_conflicts=True,
        )
        found = _stored_configs(model_version, method, by_digest)
    return found


def _stored_configs(model_version, method, by_digest) -> dict[str, int]:
    return dict(
        ExplanationConfig.objects.filter(
            model_version=model_version, method=method, digest__in=list(by_digest)
        ).values_list("digest", "id")
    )


def _config_row(model_version, method, digest, outcome: Computed) -> ExplanationConfig:
    content, version_hashes = records.stripped_config(
        outcome.config, model_version.artifact_sha256, model_version.background_sha256
    )
    return ExplanationConfig(
        model_version=model_version,
        method=method,
        explainer=outcome.explainer,
        library_version=outcome.library_version,
        output_space=outcome.output_space,
        content=content,
        version_hashes=version_hashes,
        digest=digest,
    )


# -- reading back, for a verifier -----------------------------------------------------------


def result_documents(results: QuerySet | None = None) -> Iterator[tuple[int, dict]]:
    """(id, document) of these results (all by default), rebuilt from what is stored."""
    results = ExplanationResult.objects.all() if results is None else results
    for row in results.order_by("id").values(*records.VERIFIER_COLUMNS).iterator(2000):
        yield row["id"], stored_document(row)


def stored_document(row: dict) -> dict:
    """A result's document from its stored values (VERIFIER_COLUMNS)."""
    names = _feature_names(
        row["config__model_version_id"], row["config__model_version__schema_sha256"]
    )
    return records.result_document(records.stored_values(row, names))


@lru_cache(maxsize=256)
def _feature_names(version_id: int, schema_sha256: str) -> tuple[str, ...]:
    """The version's features in schema order (keyed by the schema's hash too: it may change)."""
    return tuple(ModelVersion.objects.get(pk=version_id).parsed_schema.names)


def _stale_pointer_problems() -> list[tuple[int, str]]:
    return [
        (work_id, "its work row points to another result than the newest: readers see that one")
        for work_id in stale_pointers()
    ]


# Each result is a record of the sealed log (accounts/records.py), written with it.
EXPLANATION = register(
    RecordKind(
        name="explanation",
        label="Explanation result",
        model=ExplanationResult,
        fields=tuple(column for column in records.VERIFIER_COLUMNS if column != "id"),
        document=stored_document,
        time_field="computed_at",
        consistency=_stale_pointer_problems,
    )
)


def stale_pointers(explanations: QuerySet | None = None) -> list[int]:
    """Ids of work rows whose result pointer is not the newest result of their (decision,
    method): what a tampered (or lost) pointer looks like. Empty when all hold."""
    explanations = Explanation.objects.all() if explanations is None else explanations
    newest = (
        ExplanationResult.objects.filter(
            decision=OuterRef("decision"), config__method=OuterRef("method")
        )
        .order_by("-id")
        .values("id")[:1]
    )
    return list(
        explanations.annotate(
            pointer=Coalesce("result_id", 0), newest=Coalesce(Subquery(newest), 0)
        )
        .exclude(pointer=F("newest"))
        .order_by("id")
        .values_list("id", flat=True)
    )


def latest_result(decision_id: int, method: str) -> ExplanationResult | None:
    """The newest result of (decision, method), chosen by id (not through the pointer)."""
    return (
        ExplanationResult.objects.filter(decision_id=decision_id, config__method=method)
        .select_related("config__model_version")
        .order_by("-id")
        .first()
    )
