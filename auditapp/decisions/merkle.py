"""Merkle trees as RFC 6962 (Certificate Transparency) defines them, section 2.1.

leaf = sha256(0x00 || data), node = sha256(0x01 || left || right); a tree of n
leaves splits at k, the largest power of two below n. The functions are pure, so
anyone can check a seal or an inclusion proof with this file alone (or any CT
library): the leaf data of a decision is its content hash as 32 raw bytes.
"""

from __future__ import annotations

import hashlib

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
    return _path(index, [leaf_hash(leaf) for leaf in leaves])


def _path(index: int, hashes: list[bytes]) -> list[bytes]:
    if len(hashes) == 1:
        return []
    split = _split(len(hashes))
    if index < split:
        return [*_path(index, hashes[:split]), root_of_leaf_hashes(hashes[split:])]
    return [*_path(index - split, hashes[split:]), root_of_leaf_hashes(hashes[:split])]


def _split(size: int) -> int:
    """The largest power of two smaller than size (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


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
