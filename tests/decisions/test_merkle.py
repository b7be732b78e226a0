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


# The audit paths of the same reference tests (kSHA256Paths; CT numbers leaves from 1).
PATHS = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip

# The consistency proofs of the same reference tests (kSHA256Proofs).
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip


def test_audit_paths_equal_the_certificate_transparency_vectors():
    for index, size, expected in PATHS:
        path = merkle.inclusion_proof(LEAVES[:size], index)
        assert [node.hex() for node in path] == expected
        assert merkle.verify_inclusion(
            LEAVES[index], index, size, path, bytes.fromhex(ROOTS[size - 1])
        )


def test_consistency_proofs_equal_the_certificate_transparency_vectors():
    for first, second, expected in CONSISTENCY:
        proof = merkle.consistency_proof(LEAVES[:second], first)
        assert [node.hex() for node in proof] == expected
        old, new = bytes.fromhex(ROOTS[first - 1]), bytes.fromhex(ROOTS[second - 1])
        assert merkle.verify_consistency(first, second, old, new, proof)
        if proof:  # each vector fails for other sizes (as CT's verifier tests), roots or nodes
            for sizes in [(first - 1, second), (first + 1, second), (first, second * 2)]:
                assert not merkle.verify_consistency(*sizes, old, new, proof)
            assert not merkle.verify_consistency(first, second // 2, old, new, proof)
            assert not merkle.verify_consistency(first, second, new, new, proof)
            assert not merkle.verify_consistency(first, second, old, new, proof[:-1])
            assert not merkle.verify_consistency(first, second, old, new, [*proof[1:], proof[0]])


@given(st.integers(1, 300), st.data())
def test_every_older_tree_has_a_consistency_proof_and_a_changed_leaf_breaks_it(size, data):
    first = data.draw(st.integers(1, size))
    leaves = [i.to_bytes(2, "big") for i in range(size)]
    proof = merkle.consistency_proof(leaves, first)
    old_root, new_root = merkle.root(leaves[:first]), merkle.root(leaves)

    assert merkle.verify_consistency(first, size, old_root, new_root, proof)
    changed = data.draw(st.integers(0, first - 1))
    forged = merkle.root([*leaves[:changed], b"x", *leaves[changed + 1 : first]])
    assert not merkle.verify_consistency(first, size, forged, new_root, proof)


@given(st.lists(st.integers(1, 70), max_size=8))
def test_appending_in_batches_gives_the_same_roots_and_stored_nodes(batches):
    """The frontier grown seal by seal equals the tree of all the leaves at every size."""
    hashes = [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(sum(batches))]
    frontier, size, made = [], 0, {}
    for count in batches:
        frontier, new = merkle.append(
            frontier, size, hashes[size : size + count], lambda h: h % 3 == 0
        )
        size += count
        for height, nodes in new.items():
            made.setdefault(height, []).extend(nodes)
        assert merkle.fold(frontier) == merkle.root_of_leaf_hashes(hashes[:size])
    for height, nodes in made.items():
        step = 1 << height
        assert nodes == [
            merkle.root_of_leaf_hashes(hashes[i : i + step])
            for i in range(0, size - step + 1, step)
        ]
