"""Merkle trees as RFC 6962 (Certificate Transparency) defines them, section 2.1.

leaf = sha256(0x00 || data), node = sha256(0x01 || left || right); a tree of n
leaves splits at k, the largest power of two below n. The functions are pure, so
anyone can check a seal, an inclusion proof or a consistency proof with this
file alone (or any CT library); the leaf formats are in `decisions/log.py`.

Proofs are built from a function giving the hash of any subtree the RFC's
recursion asks for (`subtree(start, end)`), so the same code serves a list of
leaves in memory and the stored log. A growing tree is kept as its compact
range ("frontier"): the roots of the perfect subtrees that make it up, left to
right, one per binary digit of its size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

Subtree = Callable[[int, int], bytes]  # (start, end) -> MTH(D[start:end])

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of_leaf_hashes(hashes: list[bytes]) -> bytes:
    """MTH over already-hashed leaves, level by level.

    Pairing left to right and carrying an odd last node up unchanged gives the
    same tree as RFC 6962's recursive split at the largest power of two.
    """
    if not hashes:
        return EMPTY_ROOT
    level = hashes
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) of the leaf data."""
    return root_of_leaf_hashes([leaf_hash(leaf) for leaf in leaves])


def inclusion_proof(leaves: list[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]): the audit path proving leaf `index` is in the tree (RFC 6962 2.1.1)."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is outside a tree of {len(leaves)} leaves")
    return audit_path(index, len(leaves), _in_memory([leaf_hash(leaf) for leaf in leaves]))


def consistency_proof(leaves: list[bytes], first: int) -> list[bytes]:
    """PROOF(m, D[n]): proves the tree of the first `first` leaves is a prefix (RFC 6962 2.1.2)."""
    if not 0 < first <= len(leaves):
        raise IndexError(f"no consistency proof from {first} to {len(leaves)} leaves")
    return consistency_path(first, len(leaves), _in_memory([leaf_hash(leaf) for leaf in leaves]))


def _in_memory(hashes: list[bytes]) -> Subtree:
    return lambda start, end: root_of_leaf_hashes(hashes[start:end])


def audit_path(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 2.1.1, leaf to root."""
    path = []
    low, high = 0, size
    while high - low > 1:
        middle = low + _split(high - low)
        if index < middle:
            path.append(subtree(middle, high))
            high = middle
        else:
            path.append(subtree(low, middle))
            low = middle
    return path[::-1]


def consistency_path(first: int, second: int, subtree: Subtree) -> list[bytes]:
    """SUBPROOF(first, D[0:second], true) of RFC 6962 2.1.2, bottom up."""
    path = []
    low, high, whole_old_tree = 0, second, True
    while first - low != high - low:
        middle = low + _split(high - low)
        if first <= middle:
            path.append(subtree(middle, high))
            high = middle
        else:
            path.append(subtree(low, middle))
            low, whole_old_tree = middle, False
    if not whole_old_tree:
        path.append(subtree(low, high))
    return path[::-1]


def _split(size: int) -> int:
    """The largest power of two smaller than size (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_parts(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as perfect subtrees (height, index), left to right.

    Every range RFC 6962's recursion asks for starts at a multiple of a power
    of two at least as large as the range, so its parts follow end - start's
    binary digits. MTH(D[start:end]) is their roots folded from the right.
    """
    parts = []
    for height in reversed(range((end - start).bit_length())):
        if (end - start) >> height & 1:
            parts.append((height, start >> height))
            start += 1 << height
    return parts


def fold(roots: list[bytes]) -> bytes:
    """The root of a tree made of these perfect subtrees' roots, left to right."""
    if not roots:
        return EMPTY_ROOT
    node = roots[-1]
    for left in reversed(roots[:-1]):
        node = node_hash(left, node)
    return node


def frontier_heights(size: int) -> list[int]:
    """The heights of the perfect subtrees in the compact range of a tree of `size` leaves."""
    return [h for h in reversed(range(size.bit_length())) if size >> h & 1]


def append(
    frontier: list[bytes],
    size: int,
    leaf_hashes: Iterable[bytes],
    keep: Callable[[int], bool] = lambda height: False,
) -> tuple[list[bytes], dict[int, list[bytes]]]:
    """Append leaves to a tree given by its frontier: the new frontier, and the nodes made.

    Each node of a height `keep` accepts is returned, by height, in index order,
    as it is completed: the log stores those to build proofs without the leaves.
    """
    stack = list(zip(frontier_heights(size), frontier, strict=True))
    made: dict[int, list[bytes]] = {}
    for leaf in leaf_hashes:
        height, node = 0, leaf
        while stack and stack[-1][0] == height:
            node = node_hash(stack.pop()[1], node)
            height += 1
            if keep(height):
                made.setdefault(height, []).append(node)
        stack.append((height, node))
    return [node for _, node in stack], made


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: list[bytes], expected: bytes
) -> bool:
    """Whether `path` proves `leaf` is entry `index` of the tree of `size` with root `expected`.

    The verification algorithm of RFC 9162 section 2.1.3.2, which checks RFC 6962 proofs.
    """
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    node = leaf_hash(leaf)
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and node == expected


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: list[bytes]
) -> bool:
    """Whether `path` proves the tree of `first` leaves is a prefix of the tree of `second`.

    The verification algorithm of RFC 9162 section 2.1.4.2.
    """
    if not 0 < first <= second:
        return False
    if first == second:
        return not path and first_root == second_root
    if not path:
        return False
    if first & (first - 1) == 0:  # a power of two: the old root is a node of the new tree
        path = [first_root, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root
