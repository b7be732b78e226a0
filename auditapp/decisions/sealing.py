"""The log's seals: sealing new decisions, audit events and records into it, and reading seals.

The log is one RFC 6962 Merkle tree over every sealed record (`decisions/log.py`).
Every minute a seal appends what was recorded since the previous one and signs
the new tree head (tree size, root hash, time) with Ed25519. Proofs are in
`proofs.py`, verification in `verification.py`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent, LogRecord
from auditapp.appendonly import SEALING_LOCK
from auditapp.decisions import log, seal_keys, signing
from auditapp.decisions.models import Decision, Seal
from auditapp.errors import InvalidInput, NotFound
from auditapp.hashing import (
    canonical_time,
)

GENESIS = "0" * 64  # the "previous hash" of the first seal of the former hash chain
MAX_SEAL_ROWS = 100_000  # decisions (and events) per seal at most
MAX_TREE_SIZE = 2**63 - 1  # a 64-bit integer column


# --- seals -----------------------------------------------------------------------


def exported_seal(seal: Seal) -> dict[str, Any]:
    """A seal as the API answers it and an auditor keeps it: a signed tree head."""
    return {
        "tree_size": seal.tree_size,
        "root_hash": seal.root_hash,
        "sealed_at": canonical_time(seal.sealed_at),
        "signature": seal.signature,
        "key_id": seal.key_id,
    }


def require_seal_reader(actor: roles.Actor) -> None:
    """Seals, the public key and consistency proofs: for who verifies the log or reads decisions.

    They hold only sizes, hashes and times; whoever may get a decision's
    inclusion proof needs them to check it.
    """
    if not (actor.can(roles.VERIFY_CHAIN) or actor.can(roles.READ_DECISIONS)):
        raise PermissionDenied(
            f"Your role does not allow this ({roles.VERIFY_CHAIN} or {roles.READ_DECISIONS})."
        )


def export_seal(
    actor: roles.Actor, tree_size: int | None = None, *, ip: str | None = None, via: str
) -> dict[str, Any]:
    """One seal (the latest when no size is given) to keep outside; the export is audited."""
    require_seal_reader(actor)
    seal = latest_seal() if tree_size is None else seal_of_size(tree_size)
    if seal is None:
        raise NotFound("There is no seal yet: decisions are sealed every minute.")
    record_event(
        "seal.exported", actor=actor, target=seal, ip=ip, via=via, tree_size=seal.tree_size
    )
    return exported_seal(seal)


def public_key(actor: roles.Actor) -> dict[str, Any]:
    require_seal_reader(actor)
    return seal_keys.public_keys_document()


def latest_seal() -> Seal | None:
    return Seal.objects.defer(*SEAL_BODY).order_by("-index").first()


def seal_of_size(tree_size: int) -> Seal:
    seal = Seal.objects.defer(*SEAL_BODY).filter(tree_size=tree_size).first()
    if seal is None:
        raise NotFound(
            f"No seal has tree size {tree_size}: GET /api/v1/audit/seals lists them.",
            code="no_such_seal",
        )
    return seal


SEAL_BODY = (*(f"{kind}_{part}" for kind in log.NAMES for part in ("ids", "leaves")), "nodes")


def seals_page(
    actor: roles.Actor, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Seals newest first, `limit` a page; the cursor is the last tree size shown."""
    require_seal_reader(actor)
    seals = Seal.objects.defer(*SEAL_BODY, "frontier").order_by("-tree_size")
    if cursor:
        seals = seals.filter(tree_size__lt=_decode_cursor(cursor))
    rows = list(seals[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return [exported_seal(s) for s in rows], _encode_cursor(rows[-1].tree_size) if more else None


def _encode_cursor(tree_size: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([tree_size]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        (tree_size,) = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not 1 <= int(tree_size) <= MAX_TREE_SIZE:
            raise ValueError(tree_size)
        return int(tree_size)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput.named(
            "cursor", "is not valid; use the `next` value of a previous page"
        ) from None


def parse_tree_size(raw: Any, name: str = "tree_size") -> int:
    """A tree size from a request: a positive integer, or InvalidInput naming the parameter."""
    try:
        size = int(raw)
    except (TypeError, ValueError, OverflowError):
        size = 0
    if not 1 <= size <= MAX_TREE_SIZE or str(raw).strip() != str(size):
        raise InvalidInput(
            f"{name} must be a positive integer: the tree size of a seal.",
            details={name: [f"not a tree size: {raw!r}"]},
        )
    return size


# --- sealing -------------------------------------------------------------------------


def seal_new_records(max_rows: int = MAX_SEAL_ROWS) -> list[Seal]:
    """Seal every decision, audit event and record written since the last seal.

    Called by a periodic task and by `manage.py seal_records`. Two sealers at
    once cannot fork the log: index and tree size are unique, and the loser stops.
    """
    horizon = _horizon()
    made: list[Seal] = []
    while True:
        try:
            seal = _seal_next(horizon, max_rows)
        except IntegrityError:
            break  # another sealer took this index; it carries on from here
        if seal is None:
            break
        made.append(seal)
    return made


SEALED_TABLES = {"decision": Decision, "event": AuditEvent, "record": LogRecord}


def _horizon() -> dict[str, int]:
    """Per kind, the newest id that can be sealed: every transaction that drew a smaller one ended.

    Writers hold the shared side of the sealing lock while they insert (see
    `appendonly.hold_insert_order`), so taking the exclusive side waits them out.
    """
    horizon = {}
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEALING_LOCK])
        for kind in log.NAMES:
            cursor.execute(f"SELECT max(id) FROM {SEALED_TABLES[kind]._meta.db_table}")
            horizon[kind] = cursor.fetchone()[0] or 0
    return horizon


@transaction.atomic
def _seal_next(horizon: dict[str, int], max_rows: int) -> Seal | None:
    previous = latest_seal()
    first_leaf = previous.tree_size if previous else 0
    fields: dict[str, Any] = {"cut": False}
    leaves: list[bytes] = []
    for kind in log.NAMES:
        after = (getattr(previous, f"last_{kind}_id") or 0) if previous else 0
        rows = list(
            SEALED_TABLES[kind]
            .objects.filter(id__gt=after, id__lte=horizon[kind])
            .order_by("id")
            .values_list("id", "content_hash")[:max_rows]
        )
        ids, packed = _pack(rows)
        if len(rows) == max_rows and rows[-1][0] < horizon[kind]:
            fields["cut"] = True  # the rest of this backlog is in the next seal
        fields.update(
            {
                f"{kind}_count": len(rows),
                f"last_{kind}_id": rows[-1][0] if rows else (after or None),
                f"{kind}_ids": ids,
                f"{kind}_leaves": packed,
            }
        )
        leaves += log.leaf_hashes(kind, packed)
    if not leaves:
        return None
    frontier, nodes, root_hash = log.grow(
        bytes(previous.frontier) if previous else b"", first_leaf, leaves
    )
    seal = Seal(
        index=previous.index + 1 if previous else 0,
        sealed_at=timezone.now(),
        first_leaf=first_leaf,
        tree_size=first_leaf + len(leaves),
        root_hash=root_hash,
        frontier=frontier,
        nodes=nodes,
        **fields,
    )
    seal.signature, seal.key_id = signing.sign(
        seal.tree_size, seal.root_hash, canonical_time(seal.sealed_at)
    )
    seal.save(force_insert=True)
    return seal


def _pack(rows: list[tuple[int, str]]) -> tuple[bytes, bytes]:
    ids = np.fromiter((row[0] for row in rows), dtype="<i8", count=len(rows))
    return ids.tobytes(), b"".join(bytes.fromhex(row[1]) for row in rows)
