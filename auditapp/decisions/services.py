"""Recording decisions: validate everything, store all or nothing (explanation work rows too)."""

from __future__ import annotations

import logging
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import id_runs, record_counts_per_model, record_event
from auditapp.accounts.revision import RevisionCache
from auditapp.appendonly import hold_insert_order
from auditapp.decisions.models import INGESTED_EVENT, Decision, request_ids_q
from auditapp.decisions.signals import decisions_recorded
from auditapp.decisions.validation import CheckedDecision, check_decisions, version_key
from auditapp.encryption import NONCE_BYTES, Keys, row_binding, seal_inputs
from auditapp.errors import Conflict, InvalidInput, PayloadTooLarge
from auditapp.hashing import (
    COMMITTED_FORM,
    SALT_BYTES,
    canonical_json,
    canonical_time,
    content_hash,
)
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.roundtrips import pipelined

log = logging.getLogger(__name__)
INSERT_ATTEMPTS = 3


def decision_items(payload: Any) -> list[Any]:
    """The list of decisions in a request body: one object, or {"decisions": [...]}."""
    if isinstance(payload, dict) and "decisions" in payload:
        items = payload["decisions"]
        if not isinstance(items, list):
            raise InvalidInput('"decisions" must be a list of decision objects.')
    elif isinstance(payload, dict):
        items = [payload]
    else:
        raise InvalidInput('The body must be a decision object or {"decisions": [...]}.')
    if not items:
        raise InvalidInput('"decisions" is empty.')
    if len(items) > settings.ATTEST_MAX_BATCH:
        raise PayloadTooLarge(
            f"{len(items)} decisions in one request; at most {settings.ATTEST_MAX_BATCH} "
            "are accepted. Split the batch."
        )
    return items


# Versions are immutable (only their stage changes, which ingestion ignores), so
# each process keeps the ones it has seen, with their parsed schema. Registering
# a version clears it (see registry/models.py), which also keeps tests honest.
_version_cache: dict[tuple[int, str], ModelVersion] = {}
# (actor, model names) -> the names among them it may see, with their ids, at the
# configuration revision its token was read at (accounts/revision.py).
_visible = RevisionCache()
VERSION_CACHE_SIZE = 512


def clear_version_cache(**_kwargs) -> None:
    _version_cache.clear()


def _versions_for(actor: roles.Actor, items: list[Any]) -> dict[tuple[str, str], ModelVersion]:
    """The model versions the items name, among the models the actor may ingest for."""
    keys = {version_key(item) for item in items if isinstance(item, dict)} - {None}
    if not keys:
        return {}
    names = frozenset(name for name, _ in keys)
    visible = _visible.get((actor.identity, names), actor.revision)
    if visible is None:
        visible = dict(
            RegisteredModel.objects.visible_to(actor)
            .filter(name__in=names)
            .values_list("name", "id")
        )
        _visible.put((actor.identity, names), actor.revision, visible)
    wanted = {(visible[name], version) for name, version in keys if name in visible}
    missing = wanted - _version_cache.keys()
    if missing:
        if len(_version_cache) > VERSION_CACHE_SIZE:
            _version_cache.clear()
        for model_version in ModelVersion.objects.select_related("registered_model").filter(
            registered_model_id__in={model_id for model_id, _ in missing},
            version__in={version for _, version in missing},
        ):
            model_version.parsed_schema  # noqa: B018 - parse once, while caching
            _version_cache[(model_version.registered_model_id, model_version.version)] = (
                model_version
            )
    found = (_version_cache.get(key) for key in wanted)
    return {(v.registered_model.name, v.version): v for v in found if v is not None}


def _submitted_fields(decision: CheckedDecision) -> dict:
    model_version = decision.model_version
    return {
        "model": model_version.registered_model.name,
        "version": model_version.version,
        "artifact_sha256": model_version.artifact_sha256,
        "request_id": decision.request_id,
        "subject_ref": decision.subject_ref,
        "inputs": decision.inputs,
        "prediction": decision.prediction,
        "score": decision.score,
        "predicted_at": decision.predicted_at,
        "metadata": decision.metadata,
        "arm": decision.arm,
        "served_by": decision.served_by,
    }


def _same_submission(stored: Decision, decision: CheckedDecision) -> bool:
    stored_fields = stored.hashed_fields()
    submitted = _submitted_fields(decision)
    return all(canonical_json(stored_fields[k]) == canonical_json(submitted[k]) for k in submitted)


def _existing(decisions: list[CheckedDecision]) -> dict[tuple[int, str], Decision]:
    by_model: dict[int, list[str]] = defaultdict(list)
    for d in decisions:
        by_model[d.model_version.registered_model_id].append(d.request_id)
    query = Q()
    for model_id, request_ids in by_model.items():
        query |= request_ids_q(request_ids, model_id=model_id)
    found = Decision.objects.filter(query).select_related("registered_model", "model_version")
    return {(d.registered_model_id, d.request_id): d for d in found}


def record_decisions(
    actor: roles.Actor, payload: Any, *, source: str = "api", ip: str | None = None
) -> list[dict]:
    """Store every decision of a request, or none; return one result per item, in order.

    Raises InvalidInput listing every invalid item, or Conflict when a
    request_id was already used for different content.
    """
    actor.require(roles.INGEST)
    items = decision_items(payload)
    recorded_at = timezone.now()
    checked, invalid = check_decisions(items, _versions_for(actor, items), recorded_at)
    if invalid:
        raise InvalidInput(
            f"{len(invalid)} of {len(items)} decisions are invalid; nothing was stored.",
            code="invalid_decisions",
            details=invalid,
        )
    return record_checked_decisions(actor, checked, source=source, recorded_at=recorded_at, ip=ip)


def record_checked_decisions(
    actor: roles.Actor, checked: list[CheckedDecision], *, source: str, recorded_at, ip=None
) -> list[dict]:
    """Store decisions that passed check_decisions, all or none (Conflict on a reused id).

    The first attempt inserts without looking for earlier copies: new decisions
    are the common case and the unique index on (model, request_id) catches the
    rest. When it does, the next attempt looks them up and answers "duplicate"
    (or Conflict); this also settles two identical requests racing each other.
    """
    for attempt in range(INSERT_ATTEMPTS):
        try:
            return _store(actor, checked, source, recorded_at, ip, look_up_existing=attempt > 0)
        except IntegrityError:
            if attempt == INSERT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _store(actor, checked, source, recorded_at, ip, *, look_up_existing: bool) -> list[dict]:
    with transaction.atomic():
        existing = _existing(checked) if look_up_existing else {}
        results: list[dict] = [{} for _ in checked]
        new: list[int] = []
        conflicts = []
        for position, decision in enumerate(checked):
            stored = existing.get((decision.model_version.registered_model_id, decision.request_id))
            if stored is None:
                new.append(position)
            elif _same_submission(stored, decision):
                results[position] = {
                    "request_id": decision.request_id,
                    "id": stored.pk,
                    "status": "duplicate",
                }
            else:
                conflicts.append(
                    {"index": decision.index, "request_id": decision.request_id, "id": stored.pk}
                )
        if conflicts:
            raise Conflict(
                f"{len(conflicts)} request_id(s) were already recorded with different content; "
                "nothing was stored.",
                code="request_id_conflict",
                details=conflicts,
            )
        # On PostgreSQL one decision's whole store is one pipeline (roundtrips.py): the
        # lock and its id, then its row, the work rows the signal's receivers add and
        # the event, read at once. Many are COPYed (faster, but not in a pipeline), and
        # what follows the COPY is sent together.
        many = connection.vendor == "postgresql" and len(new) > 1
        with pipelined(enabled=not many):
            reserved = _reserve_ids(len(new))
            # The time is taken once this transaction holds the sealing lock, so that
            # it cannot predate the seal before the one that will hold these rows
            # (verification's backdating rule, sealing._Clock).
            recorded_at = timezone.now()
            # Rows are built (encoded, hashed) while they stream into the database,
            # so the server parses one part while Python prepares the next.
            stamp = _Stamp(recorded_at, _time_text(recorded_at), source, actor)
            fresh = _fresh_randomness(len(new))
            rows = (
                _row(checked[p], stamp, *randomness)
                for p, randomness in zip(new, fresh, strict=True)
            )
            if many:
                ids, new_rows = reserved, _copy_decisions(reserved, rows)
            else:
                ids, new_rows = _insert(reserved, rows)
            with pipelined(enabled=many):
                for position, decision_id in zip(new, ids, strict=True):
                    results[position] = {
                        "request_id": checked[position].request_id,
                        "id": decision_id,
                        "status": "created",
                    }
                _announce(actor, checked, new, ids, new_rows, recorded_at, source, ip)
    return results


def _announce(actor, checked, new, ids, new_rows, recorded_at, source, ip) -> None:
    """What follows new decisions in their transaction: their work rows, which other apps
    add on `decisions_recorded`, and the ingestion event per model naming their ids."""
    decisions_recorded.send(
        Decision,
        decisions=[
            (decision_id, row["model_version"], row["content_hash"])
            for row, decision_id in zip(new_rows, ids, strict=True)
        ],
        predictions=[row["prediction"] for row in new_rows],
        recorded_at=recorded_at,
    )
    created_ids: dict[str, list[int]] = defaultdict(list)
    for position, decision_id in zip(new, ids, strict=True):
        created_ids[checked[position].model_version.registered_model.name].append(decision_id)
    record_counts_per_model(
        INGESTED_EVENT,
        Counter(d.model_version.registered_model.name for d in checked),
        Counter(checked[p].model_version.registered_model.name for p in new),
        per_model={name: {"ids": id_runs(found)} for name, found in created_ids.items()},
        actor=actor,
        ip=ip,
        object_type="decisions.decision",
        source=source,
    )


@lru_cache(maxsize=4)
def _time_text(moment) -> str:
    return canonical_time(moment)


class _Stamp:
    """What every decision of one request shares, computed once rather than per row."""

    def __init__(self, recorded_at, recorded_text: str, source: str, actor: roles.Actor):
        self.recorded_at = recorded_at
        self.recorded_text = recorded_text  # the text a datetime encodes to in the hash
        self.source = source
        self.recorded_by_id = actor.user.pk if actor.user.is_authenticated else None
        self.client = actor.label[:200]
        self.keys = Keys()


def _fresh_randomness(count: int) -> list[tuple[bytes, bytes]]:
    """A (salt, nonce) for each of `count` rows, from one draw of the OS's CSPRNG: a draw
    cost ~19 µs here whatever its size, and two a row took 37 ms of a 1,000-decision batch."""
    size = SALT_BYTES + NONCE_BYTES
    pool = secrets.token_bytes(size * count)
    return [
        (pool[start : start + SALT_BYTES], pool[start + SALT_BYTES : start + size])
        for start in range(0, size * count, size)
    ]


def _row(decision: CheckedDecision, stamp: _Stamp, salt: bytes, nonce: bytes) -> dict:
    fields = _submitted_fields(decision)
    fields["recorded_at"] = stamp.recorded_text
    fields["source"] = stamp.source
    sensitive = decision.model_version.parsed_schema.sensitive_names
    # Sealed for this row: the sensitive values never reach the table in clear.
    row = row_binding(decision.model_version.registered_model_id, decision.request_id)
    clear, sealed, tokens = seal_inputs(decision.inputs, sensitive, row, nonce, stamp.keys)
    return {
        "registered_model_id": decision.model_version.registered_model_id,
        "model_version": decision.model_version,
        "request_id": decision.request_id,
        "subject_ref": decision.subject_ref,
        "inputs": clear,
        "prediction": decision.prediction,
        "score": decision.score,
        "predicted_at": decision.predicted_at,
        "recorded_at": stamp.recorded_at,
        "source": stamp.source,
        "metadata": decision.metadata,
        "content_hash": content_hash(fields, sensitive, salt, COMMITTED_FORM),
        "salt": salt,
        "document_form": COMMITTED_FORM,
        "recorded_by_id": stamp.recorded_by_id,
        "client": stamp.client,
        "arm": decision.arm,
        "served_by": decision.served_by,
        "sealed_inputs": sealed,
        "sensitive_tokens": tokens,
    }


COPY_COLUMNS = (
    "id",
    "registered_model_id",
    "model_version_id",
    "request_id",
    "subject_ref",
    "inputs",
    "prediction",
    "score",
    "predicted_at",
    "recorded_at",
    "source",
    "metadata",
    "content_hash",
    "salt",
    "recorded_by_id",
    "client",
)
# Written after COPY_COLUMNS (which bench/ scripts fill as they are): a served decision's
# arm and the decision a shadow one scored.
SERVED_COLUMNS = ("arm", "served_by", "document_form")
SEALED_COLUMNS = ("sealed_inputs", "sensitive_tokens")
DECISION_COLUMNS = COPY_COLUMNS + SERVED_COLUMNS + SEALED_COLUMNS


def _reserve_ids(count: int) -> list[int] | None:
    """Take the sealing lock (appendonly.hold_insert_order), then draw the ids `count` rows
    will have, the table's default's (a month's range: auditapp/partitions.py): one round
    trip inside `pipelined`, the lock first. None on SQLite, which numbers rows as they
    are inserted, one writer at a time."""
    hold_insert_order()
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {Decision._meta.db_table}_next_id() FROM generate_series(1, %s)", [count]
        )
        return [row[0] for row in cursor.fetchall()]


def _insert(ids: list[int] | None, rows: Iterable[dict]) -> tuple[list[int], list[dict]]:
    """Insert a few decision rows under the reserved `ids` (an INSERT, sent without waiting
    inside `pipelined`); without them (SQLite), the ORM's bulk INSERT numbers them."""
    rows = list(rows)
    if ids is None:
        objs = Decision.objects.bulk_create([Decision(**row) for row in rows])
        return [obj.pk for obj in objs], rows
    if rows:
        values = "(" + ", ".join(["%s"] * len(DECISION_COLUMNS)) + ")"
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {Decision._meta.db_table} ({', '.join(DECISION_COLUMNS)}) "
                f"VALUES {', '.join([values] * len(rows))}",
                [value for i, row in zip(ids, rows, strict=True) for value in row_values(i, row)],
            )
    return ids, rows


def _copy_decisions(ids: list[int], rows: Iterable[dict]) -> list[dict]:
    """COPY decision rows under the reserved `ids`: several times faster than an INSERT
    for many rows (one COPY costs two round trips, and cannot be pipelined)."""
    written = []
    copy_sql = f"COPY {Decision._meta.db_table} ({', '.join(DECISION_COLUMNS)}) FROM STDIN"
    # The raw psycopg cursor raises psycopg's errors; wrapping turns a unique violation
    # into django.db.IntegrityError, which record_checked_decisions retries.
    with (
        connection.cursor() as cursor,
        connection.wrap_database_errors,
        cursor.cursor.copy(copy_sql) as copy,
    ):
        for decision_id, row in zip(ids, rows, strict=True):
            written.append(row)
            copy.write_row(row_values(decision_id, row))
    return written


def row_values(decision_id: int, row: dict) -> tuple:
    """A built row's values in the order of DECISION_COLUMNS."""
    return (
        decision_id,
        row["registered_model_id"],
        row["model_version"].pk,
        row["request_id"],
        row["subject_ref"],
        canonical_json(row["inputs"]),
        canonical_json(row["prediction"]),
        row["score"],
        row["predicted_at"],
        row["recorded_at"],
        row["source"],
        canonical_json(row["metadata"]),
        row["content_hash"],
        row["salt"],
        row["recorded_by_id"],
        row["client"],
        row["arm"],
        row["served_by"],
        row["document_form"],
        row["sealed_inputs"],
        None if row["sensitive_tokens"] is None else canonical_json(row["sensitive_tokens"]),
    )


def note_decision_viewed(actor: roles.Actor, decision: Decision, *, ip=None, via: str = "api"):
    """Every read of a decision is an audit event (HIPAA 164.312(b): reads are logged too)."""
    record_event("decision.viewed", actor=actor, target=decision, ip=ip, via=via)
