"""RFC 6962 Merkle trees, checked against Certificate Transparency's published test vectors."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from auditapp.decisions import merkle

# The leaves and roots of the reference tests of certificate-transparency (merkle_tree_test).
LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243",
          "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]  # fmt: skip
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def recursive_root(leaves: list[bytes]) -> bytes:
    """MTH exactly as RFC 6962 2.1 writes it, as an independent check of the iterative one."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    left, right = recursive_root(leaves[:k]), recursive_root(leaves[k:])
    return hashlib.sha256(b"\x01" + left + right).digest()


def test_roots_equal_the_certificate_transparency_vectors():
    for size, expected in enumerate(ROOTS, start=1):
        assert merkle.root(LEAVES[:size]).hex() == expected


def test_the_empty_tree_is_the_hash_of_nothing():
    assert merkle.root([]).hex() == hashlib.sha256(b"").hexdigest()


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40, unique=True), st.data())
def test_every_leaf_has_a_proof_that_verifies_and_no_other_leaf_fits_it(leaves, data):
    index = data.draw(st.integers(0, len(leaves) - 1))
    tree_root = merkle.root(leaves)
    assert tree_root == recursive_root(leaves)
    path = merkle.inclusion_proof(leaves, index)

    assert merkle.verify_inclusion(leaves[index], index, len(leaves), path, tree_root)
    assert not merkle.verify_inclusion(leaves[index] + b"x", index, len(leaves), path, tree_root)
    if len(leaves) > 1:
        other = (index + 1) % len(leaves)
        assert not merkle.verify_inclusion(leaves[other], index, len(leaves), path, tree_root)
        assert not merkle.verify_inclusion(leaves[index], other, len(leaves), path, tree_root)
