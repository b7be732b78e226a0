"""Proofs from the log: a record is in the tree of a seal (inclusion), a later seal's tree
extends an earlier one's (consistency)."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db.models import BinaryField
from django.db.models.functions import Substr

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.decisions import log, merkle
from auditapp.decisions.models import Decision, Seal
from auditapp.decisions.sealing import SEAL_BODY, latest_seal, require_seal_reader, seal_of_size
from auditapp.errors import InvalidInput, NotFound

# --- proofs ----------------------------------------------------------------------------


# What an inclusion proof calls each kind of record it can prove (its `<kind>_id`).
RECORD_NAMES = {"decision": "Decision", "event": "Audit event"}


def seal_of(decision: Decision, *, with_ids: bool = False) -> Seal | None:
    """The seal that appended the decision, None while it is not sealed yet."""
    return _seal_of("decision", decision.pk, with_ids=with_ids)


def _seal_of(kind: str, record_id: int, *, with_ids: bool = False) -> Seal | None:
    """The seal that appended record `record_id` of a kind, None while it is not sealed yet."""
    seals = Seal.objects.filter(
        **{f"last_{kind}_id__gte": record_id, f"{kind}_count__gt": 0}
    ).defer(*(f for f in SEAL_BODY if not (with_ids and f == f"{kind}_ids")))
    return seals.order_by("index").first()


def decision_leaf(decision: Decision) -> tuple[Seal, int, str]:
    """(the seal that appended it, its leaf index in the log, the content hash sealed)."""
    return record_leaf("decision", decision.pk)


def record_leaf(kind: str, record_id: int) -> tuple[Seal, int, str]:
    """Where a record of a kind is in the log: (its seal, its leaf index, the content hash sealed).

    A seal appends each kind's records in id order after the kinds before it
    (log.KINDS), so the leaf index is the seal's first leaf, plus the counts of
    the kinds before, plus the record's position among its kind's ids.
    """
    name = RECORD_NAMES.get(kind, kind)
    seal = _seal_of(kind, record_id, with_ids=True)
    if seal is None:
        raise NotFound(
            f"{name} {record_id} is not sealed yet; seals are made every minute.",
            code="not_sealed",
        )
    ids = np.frombuffer(bytes(getattr(seal, f"{kind}_ids")), dtype="<i8")
    position = int(np.searchsorted(ids, record_id))
    if position >= len(ids) or ids[position] != record_id:
        raise NotFound(f"{name} {record_id} is missing from seal {seal.index}.")
    before = 0
    for other, _, count_field, _ in log.KINDS:
        if other == kind:
            break
        before += getattr(seal, count_field)
    sealed = Substr(f"{kind}_leaves", 32 * position + 1, 32, output_field=BinaryField())
    content_hash = Seal.objects.filter(pk=seal.pk).values_list(sealed, flat=True).get()
    return seal, seal.first_leaf + before + position, bytes(content_hash).hex()


def inclusion_proof(record: Decision | AuditEvent, tree_size: int | None = None) -> dict[str, Any]:
    """The RFC 6962 audit path from a decision's or audit event's leaf to a seal's root.

    The seal is the latest unless `tree_size` names another one that holds the
    record: a proof against a seal kept long ago is as good as against today's.
    """
    kind = "event" if isinstance(record, AuditEvent) else "decision"
    sealed_in, leaf_index, content_hash = record_leaf(kind, record.pk)
    seal = _seal_or_latest(tree_size)
    if seal.tree_size <= leaf_index:
        raise InvalidInput(
            f"{RECORD_NAMES[kind]} {record.pk} is leaf {leaf_index}, first sealed in the tree "
            f"of size {sealed_in.tree_size}: tree_size must be at least that.",
            details={"tree_size": [f"at least {sealed_in.tree_size}"]},
        )
    path = log.inclusion_path(leaf_index, seal.tree_size)
    return {
        f"{kind}_id": record.pk,
        "content_hash": content_hash,
        "leaf_index": leaf_index,
        "tree_size": seal.tree_size,
        "root_hash": seal.root_hash,
        "audit_path": [node.hex() for node in path],
    }


def inclusion_holds(proof: dict[str, Any]) -> bool:
    """Whether an inclusion proof leads to its root (RFC 9162 verification)."""
    kind = next((kind for kind in log.PREFIX if f"{kind}_id" in proof), "decision")
    return merkle.verify_inclusion(
        log.leaf_data(kind, bytes.fromhex(proof["content_hash"])),
        proof["leaf_index"],
        proof["tree_size"],
        [bytes.fromhex(node) for node in proof["audit_path"]],
        bytes.fromhex(proof["root_hash"]),
    )


def consistency_proof(actor: roles.Actor, first: int, second: int | None) -> dict[str, Any]:
    """The RFC 6962 proof that the tree of seal `second` (default: the latest) extends `first`'s."""
    require_seal_reader(actor)
    old = seal_of_size(first)
    new = _seal_or_latest(second)
    if new.tree_size < old.tree_size:
        raise InvalidInput(
            "first must not be larger than second: a later tree extends an earlier one.",
            details={"first": [f"larger than second ({new.tree_size})"]},
        )
    path = log.consistency_path(old.tree_size, new.tree_size)
    return {
        "first": old.tree_size,
        "second": new.tree_size,
        "first_root": old.root_hash,
        "second_root": new.root_hash,
        "consistency_proof": [node.hex() for node in path],
    }


def _seal_or_latest(tree_size: int | None) -> Seal:
    """The seal of `tree_size`, else the latest; "not found" when nothing is sealed yet."""
    seal = latest_seal() if tree_size is None else seal_of_size(tree_size)
    if seal is None:
        raise NotFound("Nothing is sealed yet.")
    return seal
