"""Re-encrypting decisions' sensitive inputs under the current data key (rotate_data_keys).

Each batch is one transaction: it reads the next rows (by id) whose blob is not under the
current key, or whose sensitive values are still in clear (recorded before encryption at
rest), opens or takes their values, seals them under the current key for the same row
(the content hash, unchanged) and writes the blob, the blind index and, for a clear row,
`inputs` without them. A batch that committed is done: a rerun after an interruption
selects only what is left. Nothing the content hash covers changes, so the log, its seals
and verification are untouched (the hash commits to the plaintext's salted commitment).

On PostgreSQL the decisions' UPDATE trigger lets exactly this change through in a
transaction that set REENCRYPTION_SETTING (migration 0014): only sealed_inputs,
sensitive_tokens, and inputs losing keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from django.db import connection, transaction

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.decisions.models import Decision
from auditapp.encryption import (
    FORMAT,
    Keyring,
    blind_tokens,
    keyring,
    open_sealed,
    row_binding,
    seal,
    split_inputs,
)
from auditapp.hashing import canonical_json
from auditapp.registry.models import ModelVersion
from explain.schema import parse_schema

REENCRYPTION_SETTING = "attest.reencryption"
STARTED_EVENT = "data_keys.rotation_started"
FINISHED_EVENT = "data_keys.rotation_finished"
DEFAULT_BATCH = 1000


@dataclass
class Progress:
    total: int  # rows to re-encrypt when the run started
    done: int = 0
    batches: int = 0
    started: float = 0.0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        return f"{self.done} / {self.total} decisions re-encrypted ({self.rate:,.0f}/s)"


def _header(ring: Keyring) -> bytes:
    key_id = ring.current.encode()
    return bytes([FORMAT, len(key_id)]) + key_id


def _sensitive_versions() -> dict[int, frozenset[str]]:
    found = {}
    for pk, schema in ModelVersion.objects.values_list("pk", "schema"):
        names = parse_schema(schema).sensitive_names
        if names:
            found[pk] = names
    return found


def _pending_sql(versions: dict[int, frozenset[str]]) -> tuple[str, list]:
    """The condition of a row still to do: a blob under another key, or clear values. An
    erased decision (kept commitments, no blob, no inputs) has nothing to seal: it had read
    as one in clear, counted at every run and given an empty blob."""
    placeholders = ", ".join(["%s"] * len(versions)) or "NULL"
    return (
        "(kept_commitments IS NULL AND "
        "((sealed_inputs IS NOT NULL AND substr(sealed_inputs, 1, %s) <> %s) OR "
        f"(sealed_inputs IS NULL AND model_version_id IN ({placeholders}))))"
    ), list(versions)


def pending_count(ring: Keyring | None = None) -> int:
    ring = ring or keyring()
    header = _header(ring)
    condition, params = _pending_sql(_sensitive_versions())
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {Decision._meta.db_table} WHERE {condition}",
            [len(header), header, *params],
        )
        return cursor.fetchone()[0]


def rotate_data_keys(
    *,
    batch: int = DEFAULT_BATCH,
    max_batches: int | None = None,
    report: Callable[[Progress], None] = lambda progress: None,
) -> Progress:
    """Re-encrypt, batch by batch, every decision not under the current key; audited at
    the start and the end (with counts). `max_batches` stops early (the rest is left for
    a rerun, which continues where this one stopped)."""
    ring = keyring()
    versions = _sensitive_versions()
    progress = Progress(total=pending_count(ring), started=time.monotonic())
    actor = roles.system_actor()
    record_event(STARTED_EVENT, actor=actor, key_id=ring.current, pending=progress.total)
    last_id = 0
    while max_batches is None or progress.batches < max_batches:
        done, last_id = _rotate_batch(ring, versions, batch, last_id)
        if not done:
            break
        progress.done += done
        progress.batches += 1
        report(progress)
    left = pending_count(ring)
    record_event(
        FINISHED_EVENT,
        actor=actor,
        key_id=ring.current,
        reencrypted=progress.done,
        batches=progress.batches,
        left=left,
    )
    progress.total = progress.done + left
    return progress


def _rotate_batch(ring, versions, batch: int, last_id: int) -> tuple[int, int]:
    """The next rows after `last_id` still to do, sealed again in one transaction (committed
    when this returns); (how many, the last id)."""
    header = _header(ring)
    condition, params = _pending_sql(versions)
    lock = " FOR UPDATE" if connection.vendor == "postgresql" else ""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, model_version_id, inputs, sealed_inputs, registered_model_id, request_id "
            f"FROM "
            f"{Decision._meta.db_table} WHERE id > %s AND {condition} ORDER BY id LIMIT %s{lock}",
            [last_id, len(header), header, *params, batch],
        )
        rows = cursor.fetchall()
        if rows:
            _rewrite(cursor, rows, ring, versions)
    return len(rows), rows[-1][0] if rows else last_id


def _rewrite(cursor, rows: list[tuple], ring: Keyring, versions) -> None:
    """One batch sealed again under the current key (inside the batch's transaction)."""
    updates = []
    for pk, version_id, inputs, sealed, model_id, request_id in rows:
        row = row_binding(model_id, request_id)
        values = orjson.loads(inputs) if isinstance(inputs, str | bytes) else inputs
        if sealed is not None:
            clear, secret = values, open_sealed(bytes(sealed), row, ring)
        else:
            clear, secret = split_inputs(values, versions.get(version_id, frozenset()))
        tokens = blind_tokens(secret) if secret else None
        updates.append(
            (
                canonical_json(clear),
                seal(secret, row, ring),
                None if tokens is None else canonical_json(tokens),
                pk,
            )
        )
    jsonb = "::jsonb" if connection.vendor == "postgresql" else ""
    if connection.vendor == "postgresql":
        cursor.execute("SELECT set_config(%s, 'on', true)", [REENCRYPTION_SETTING])
    cursor.executemany(
        f"UPDATE {Decision._meta.db_table} SET inputs = %s{jsonb}, sealed_inputs = %s, "
        f"sensitive_tokens = %s{jsonb} WHERE id = %s",
        updates,
    )
    if connection.vendor == "postgresql":
        cursor.execute("SELECT set_config(%s, '', true)", [REENCRYPTION_SETTING])
