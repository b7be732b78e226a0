"""The log: one RFC 6962 Merkle tree over every sealed record, and its proofs.

Leaves are appended in sealing order: each seal appends the decisions it
covers by id, then the audit events, then the records of every other kind
(accounts/records.py: model versions, outcomes, reviews, explanations...), each
by id (KINDS, in that order).
A leaf hash is sha256(0x00 || leaf data), where the leaf data is

- a decision: its content hash, 32 raw bytes;
- an audit event: b"event:" followed by its content hash's 32 raw bytes;
- any other record: b"record:" followed by the 32 bytes of the hash of
  {"kind", "id", "record": its document}.

Each kind has a prefix of its own, so no two kinds' leaves can be taken for one
another, and the decisions' leaves stay what inclusion proofs have always proven.

Storage: each seal keeps the content hashes it appended (the leaves), the
tree's frontier at its size, and the roots of the subtrees of 2^8, 2^16, ...
leaves it completed. Any subtree the RFC's proofs ask for is then at most 128
stored hashes away, so a proof in a tree of a million leaves reads a few
kilobytes and hashes a few thousand nodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import BinaryField, Subquery
from django.db.models.functions import Substr

from auditapp.decisions import merkle
from auditapp.decisions.models import Seal

# (kind, leaf-data prefix, the Seal fields holding its count and its content hashes)
KINDS = (
    ("decision", b"", "decision_count", "decision_leaves"),
    ("event", b"event:", "event_count", "event_leaves"),
    ("record", b"record:", "record_count", "record_leaves"),
)
NAMES = tuple(kind for kind, *_ in KINDS)
PREFIX = {kind: prefix for kind, prefix, _, _ in KINDS}
STRIDE = 8  # the roots of subtrees of 2^8, 2^16, 2^24, ... leaves are stored
READ_WHOLE = 4096  # leaves of a seal up to which a proof reads all of them at once


def leaf_data(kind: str, content_hash: bytes) -> bytes:
    return PREFIX[kind] + content_hash


def leaf_hashes(kind: str, packed: bytes) -> list[bytes]:
    """The leaf hashes of packed 32-byte content hashes of one kind."""
    sha256, head = hashlib.sha256, b"\x00" + PREFIX[kind]
    return [sha256(head + packed[i : i + 32]).digest() for i in range(0, len(packed), 32)]


def seal_leaf_hashes(
    seal: Seal, kinds: tuple[tuple[str, bytes, str, str], ...] = KINDS
) -> list[bytes]:
    """Every leaf hash a seal appended, in log order (`kinds`: of an older migration state)."""
    hashes: list[bytes] = []
    for kind, _, _, field in kinds:
        hashes += leaf_hashes(kind, bytes(getattr(seal, field)))
    return hashes


def stored(height: int) -> bool:
    return height % STRIDE == 0


def split(packed: bytes) -> list[bytes]:
    return [packed[i : i + 32] for i in range(0, len(packed), 32)]


def grow(frontier: bytes, size: int, leaves: list[bytes]) -> tuple[bytes, bytes, str]:
    """Append leaf hashes to the tree of `size`: (new frontier, nodes to store, root hex)."""
    new_frontier, made = merkle.append(split(frontier), size, leaves, keep=stored)
    nodes = b"".join(b"".join(made[height]) for height in sorted(made))
    return b"".join(new_frontier), nodes, merkle.fold(new_frontier).hex()


def root_of(frontier: bytes) -> str:
    return merkle.fold(split(frontier)).hex()


# --- proofs from the stored tree ----------------------------------------------------


def inclusion_path(leaf_index: int, tree_size: int) -> list[bytes]:
    return merkle.audit_path(leaf_index, tree_size, StoredTree().subtree)


def consistency_path(first: int, second: int) -> list[bytes]:
    return merkle.consistency_path(first, second, StoredTree().subtree)


class StoredTree:
    """Subtree hashes of the log, from the seals' stored nodes and leaves.

    Completed subtrees never change, so any tree size's proofs can use them.
    One instance serves one proof: it remembers what it read.
    """

    def __init__(self) -> None:
        self._perfect: dict[tuple[int, int], bytes] = {}
        self._seals: dict[
            int, list[tuple[str, int, bytes]]
        ] = {}  # tree_size -> parts of a small seal

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range RFC 6962's recursion asks for."""
        return merkle.fold([self.perfect(h, i) for h, i in merkle.perfect_parts(start, end)])

    def perfect(self, height: int, index: int) -> bytes:
        """The root of the perfect subtree of 2^height leaves starting at leaf index << height."""
        key = (height, index)
        if key not in self._perfect:
            base = height - height % STRIDE
            low = index << (height - base)
            high = low + (1 << (height - base))
            below = self._leaves(low, high) if base == 0 else self._nodes(base, low, high)
            self._perfect[key] = merkle.root_of_leaf_hashes(below)
        return self._perfect[key]

    def _nodes(self, height: int, low: int, high: int) -> list[bytes]:
        """Stored roots of the subtrees of 2^height leaves with indices low..high-1."""
        found: list[bytes] = []
        for first_leaf, tree_size, nodes in _seals_between(
            (low + 1) << height, high << height, "first_leaf", "tree_size", "nodes"
        ):
            nodes, offset = bytes(nodes), 0
            for lower in range(STRIDE, height, STRIDE):
                offset += (tree_size >> lower) - (first_leaf >> lower)
            first = first_leaf >> height
            for i in range(max(low, first), min(high, tree_size >> height)):
                at = 32 * (offset + i - first)
                found.append(nodes[at : at + 32])
        if len(found) != high - low:
            raise LookupError(f"the log has no stored nodes {low}-{high} of height {height}")
        return found

    def _leaves(self, low: int, high: int) -> list[bytes]:
        """The leaf hashes low..high-1, read from the seals that appended them."""
        found: list[bytes] = []
        for parts in self._seal_parts(low, high):
            for kind, position, packed in parts:
                begin, end = max(low, position), min(high, position + len(packed) // 32)
                if begin < end:
                    found += leaf_hashes(
                        kind, packed[32 * (begin - position) : 32 * (end - position)]
                    )
        if len(found) != high - low:
            raise LookupError(f"the log has no leaves {low}-{high}")
        return found

    def _seal_parts(self, low: int, high: int) -> Iterator[list[tuple[str, int, bytes]]]:
        """Per seal holding leaves low..high-1: (kind, index of its first leaf here, hashes).

        A small seal is read whole, once per proof; of a large one, only the slice
        needed is read (SUBSTRING of its packed content hashes).
        """

        counts = [count for _, _, count, _ in KINDS]
        heads = list(_seals_between(low + 1, high, "tree_size", "first_leaf", *counts))
        small = [h[0] for h in heads if h[0] - h[1] <= READ_WHOLE and h[0] not in self._seals]
        fields = [field for _, _, _, field in KINDS]
        for size, first_leaf, *packed in Seal.objects.filter(tree_size__in=small).values_list(
            "tree_size", "first_leaf", *fields
        ):
            self._seals[size] = _parts(first_leaf, [bytes(p) for p in packed])
        for size, first_leaf, *sizes in heads:
            if size - first_leaf <= READ_WHOLE:
                yield self._seals[size]
            else:
                yield _slices(size, first_leaf, sizes, low, high)


def _parts(first_leaf: int, packed: list[bytes]) -> list[tuple[str, int, bytes]]:
    parts, position = [], first_leaf
    for (kind, *_), hashes in zip(KINDS, packed, strict=True):
        parts.append((kind, position, hashes))
        position += len(hashes) // 32
    return parts


def _slices(
    size: int, first_leaf: int, counts: list[int], low: int, high: int
) -> list[tuple[str, int, bytes]]:
    """Of the seal of tree size `size`, the content hashes of leaves low..high-1 only."""

    slices, starts, position = {}, {}, first_leaf
    for (kind, _, _, field), count in zip(KINDS, counts, strict=True):
        begin, end = max(low, position), min(high, position + count)
        if begin < end:
            start, length = 32 * (begin - position) + 1, 32 * (end - begin)
            slices[kind] = Substr(field, start, length, output_field=BinaryField())
            starts[kind] = begin
        position += count
    row = Seal.objects.filter(tree_size=size).annotate(**slices).values_list(*slices).get()
    return [(kind, starts[kind], bytes(value)) for kind, value in zip(slices, row, strict=True)]


def _seals_between(lowest_end: int, highest_start: int, *fields: str, flat: bool = False) -> Any:
    """Seals ending at or after leaf count `lowest_end` and starting before `highest_start`.

    Both bounds are on the unique tree_size, so the database reads an index range:
    up to the first seal reaching `highest_start`.
    """

    last = Seal.objects.filter(tree_size__gte=highest_start).order_by("tree_size")
    return (
        Seal.objects.filter(
            tree_size__gte=lowest_end,
            tree_size__lte=Subquery(last.values("tree_size")[:1]),
        )
        .order_by("tree_size")
        .values_list(*fields, flat=flat)
    )


def rebuild(seals: Iterable[Seal]) -> Iterator[tuple[Seal, str, str | None]]:
    """Rebuild the tree seal by seal from the stored leaves: each seal, its root, what is wrong.

    What is wrong is None, or the first of: a root_hash that does not match the
    leaves, or a stored frontier or stored nodes that differ from the rebuilt ones.
    """
    frontier, size = b"", 0
    for seal in seals:
        leaves = seal_leaf_hashes(seal)
        frontier, nodes, root = grow(frontier, size, leaves)
        size += len(leaves)
        if root != seal.root_hash:
            yield seal, root, "its root_hash does not match the log's leaves"
        elif bytes(seal.frontier) != frontier or bytes(seal.nodes) != nodes:
            yield seal, root, "its stored tree nodes do not match the log's leaves"
        else:
            yield seal, root, None
