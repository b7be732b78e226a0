"""Records in the sealed log beyond decisions and audit events: one journal for every kind.

An auditor relies on more than decisions: the model version that decided (its
artifact hash, schema, card), its stage changes, outcomes, feedback, review
cases and their events, explanation results. Each kind registers here (from
its own app's `records.py`) what a verifier reads of a row and the document
those values hash to. Whenever such a row is written, the writer calls
`append` in the same transaction: a LogRecord row (kind, object id, hash of
{"kind", "id", "record": document}) joins the log at the next seal, as a leaf
`b"record:" + hash` (decisions/log.py).

Verification rebuilds each row's document from the stored values and compares:
a row without a record, a record without a row, or a row whose values no longer
hash to its latest record is named. Insert-only kinds have exactly one record
per row; a kind whose rows carry state (a review case) records its whole
document again after every change, and the latest record must match.

Documents are rebuilt from values read back from the database (`append` reads
them too), so what is hashed is exactly what a verifier will read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connections, models, router
from django.utils import timezone

from auditapp.accounts.models import LogRecord
from auditapp.appendonly import SEALING_LOCK, hold_insert_order
from auditapp.hashing import sha256_hex
from auditapp.sqlarrays import id_array


def stored_values(row: dict[str, Any]) -> dict[str, Any]:
    """The default document: the values read, as stored (times hash as canonical UTC text)."""
    return {name: value for name, value in row.items() if name != "pk"}


@dataclass(frozen=True)
class RecordKind:
    name: str
    label: str  # for people: "Review case"
    model: type[models.Model]
    fields: tuple[str, ...]  # what .values() reads for the document (lookups allowed)
    document: Callable[[dict[str, Any]], dict[str, Any]] = stored_values
    time_field: str | None = None  # when the row says it was made: checked against its record
    stateful: bool = False  # True: rows change, and each change is recorded again
    # Checks beyond each row's own document, as (object id, reason) problems: for
    # explanations, that each work row points to its newest result.
    consistency: Callable[[], list[tuple[int, str]]] | None = None
    plural: str = ""  # for people, when not the label + "s": "feedback"

    def count(self, n: int) -> str:
        """ "1 review case", "3 review cases", "2 feedback"."""
        word = self.label.lower() if n == 1 else (self.plural or self.label.lower() + "s")
        return f"{n:,} {word}"


_KINDS: dict[str, RecordKind] = {}


def register(kind: RecordKind) -> RecordKind:
    if kind.name in _KINDS and _KINDS[kind.name] != kind:
        raise ValueError(f"record kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    return kind


def describe_counts(counts: dict[str, int]) -> str:
    """Rows of each kind, as people read them: "1 feedback, 3 review cases"."""
    return ", ".join(_KINDS[name].count(n) for name, n in counts.items() if n)


def kinds() -> list[RecordKind]:
    """Every registered kind, by name (the order verification reports them in)."""
    return [_KINDS[name] for name in sorted(_KINDS)]


def record_hash(kind_name: str, object_id: int, document: dict[str, Any]) -> str:
    return sha256_hex({"kind": kind_name, "id": object_id, "record": document})


def values_of(record_kind: RecordKind, manager=None) -> models.QuerySet:
    """The rows of a kind as the values its documents are built from, in id order."""
    manager = manager if manager is not None else record_kind.model._default_manager
    return manager.order_by("pk").values("pk", *record_kind.fields)


def hashes_of(record_kind: RecordKind, rows: Iterable[dict[str, Any]]) -> list[tuple[int, str]]:
    return [
        (row["pk"], record_hash(record_kind.name, row["pk"], record_kind.document(row)))
        for row in rows
    ]


def append(kind_name: str, ids: Iterable[int]) -> int:
    """Record rows of a kind in the log (call in the transaction that wrote them)."""
    ids = list(ids)
    if not ids:
        return 0
    record_kind = _KINDS[kind_name]
    rows = values_of(record_kind).filter(pk__in=ids)
    hashes = hashes_of(record_kind, rows)
    if len(hashes) != len(set(ids)):
        raise LookupError(f"{kind_name}: some of {ids[:5]}... were not found to record")
    return write(kind_name, hashes)


# A batch's records in one statement on PostgreSQL, the sealing lock taken in it before
# any row draws its id (appendonly.hold_insert_order). Ids and hashes travel as array
# literals: binding a few hundred values one by one costs more than the insert.
WRITE_SQL = """
WITH held AS (SELECT pg_advisory_xact_lock_shared(%s))
INSERT INTO {table} (kind, object_id, content_hash, recorded_at, backfilled)
SELECT %s, v.object_id, v.content_hash, %s, %s
FROM held, unnest(%s::bigint[], %s::text[]) AS v(object_id, content_hash)
"""
# What a record's hash must be, on every database: lowercase hex sha256 digests (and so
# nothing in PostgreSQL's array literal needs quoting).
HEX_DIGESTS = re.compile(r"\{[0-9a-f]{64}(,[0-9a-f]{64})*\}")


def write(
    kind_name: str, hashes: list[tuple[int, str]], model=LogRecord, *, backfilled: bool = False
) -> int:
    now = timezone.now()
    digests = "{" + ",".join(digest for _, digest in hashes) + "}"
    if hashes and not HEX_DIGESTS.fullmatch(digests):
        raise ValueError(f"{kind_name}: a content hash is not a sha256 hex digest")
    db = connections[router.db_for_write(model)]
    if db.vendor == "postgresql":
        if not hashes:
            return 0
        ids = id_array(object_id for object_id, _ in hashes)
        with db.cursor() as cursor:
            cursor.execute(
                WRITE_SQL.format(table=model._meta.db_table),
                [SEALING_LOCK, kind_name, now, backfilled, ids, digests],
            )
        return len(hashes)
    hold_insert_order()
    model.objects.bulk_create(
        [
            model(
                kind=kind_name,
                object_id=object_id,
                content_hash=digest,
                recorded_at=now,
                backfilled=backfilled,
            )
            for object_id, digest in hashes
        ]
    )
    return len(hashes)


def backfill(apps, schema_editor, kind_names: Iterable[str]) -> None:
    """For a migration: record the rows that existed before their kind was in the log."""
    log_record = apps.get_model("accounts", "LogRecord")
    for name in kind_names:
        record_kind = _KINDS[name]
        historical = apps.get_model(record_kind.model._meta.label)
        recorded = set(log_record.objects.filter(kind=name).values_list("object_id", flat=True))
        rows = [
            row
            for row in values_of(record_kind, historical._default_manager)
            if row["pk"] not in recorded
        ]
        if rows:
            write(name, hashes_of(record_kind, rows), model=log_record, backfilled=True)
