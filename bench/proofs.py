"""Proof benchmark: inclusion and consistency proofs in a log of 1,000,000 leaves.

Run with `.venv/bin/python bench/proofs.py` (PostgreSQL on 127.0.0.1). Not a
test: it prints figures.

1. DATABASE_URL (default postgres://postgres@127.0.0.1:5432/attest_bench_proofs)
   is created if missing and migrated, and its seals are replaced by a log of
   --leaves synthetic leaves (random content hashes: a proof reads only the
   seals, never the records), grown and signed seal by seal as the sealer
   does, in one of two shapes: `bulk`, seals of 100,000 leaves (a backlog
   sealed at once), and `minutes`, seals of 500 leaves (a busy log sealed
   every minute: many more rows to find the leaves in).
2. For random leaves and random pairs of seals, the time of the proof as the
   API computes it (log.inclusion_path / log.consistency_path on a fresh
   StoredTree, i.e. nothing cached between proofs), median and worst.
3. Every proof is checked against the seals' roots with decisions/merkle.py.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/attest_bench_proofs"
SHAPES = {"bulk": 100_000, "minutes": 500}


def prepare():
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    from bench import ingest

    ingest.configure_env()
    ingest.migrated()


def build_log(leaves: int, per_seal: int, seed: int = 7) -> float:
    """Replace the seals with a signed log of `leaves` random event leaves; seconds taken."""
    from django.db import connection, transaction
    from django.utils import timezone

    from auditapp.decisions import log, signing
    from auditapp.decisions.models import Seal
    from auditapp.hashing import canonical_time

    rng = random.Random(seed)
    began = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE decisions_seal DISABLE TRIGGER decisions_seal_no_truncate")
        cursor.execute("TRUNCATE decisions_seal")
        cursor.execute("ALTER TABLE decisions_seal ENABLE TRIGGER decisions_seal_no_truncate")
    frontier, size, index, batch = b"", 0, 0, []
    while size < leaves:
        count = min(per_seal, leaves - size)
        packed = rng.randbytes(32 * count)
        frontier, nodes, root = log.grow(frontier, size, log.leaf_hashes("event", packed))
        sealed_at = timezone.now()
        signature, key_id = signing.sign(size + count, root, canonical_time(sealed_at))
        batch.append(
            Seal(
                index=index,
                sealed_at=sealed_at,
                first_leaf=size,
                tree_size=size + count,
                root_hash=root,
                signature=signature,
                key_id=key_id,
                decision_count=0,
                last_decision_id=None,
                event_count=count,
                last_event_id=size + count,
                decision_ids=b"",
                decision_leaves=b"",
                event_ids=b"",  # not read by proofs
                event_leaves=packed,
                frontier=frontier,
                nodes=nodes,
            )
        )
        size, index = size + count, index + 1
        if len(batch) >= 200:
            Seal.objects.bulk_create(batch)
            batch = []
    Seal.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE decisions_seal")
    return time.perf_counter() - began


def measure(samples: int, seed: int = 11) -> dict[str, list[float]]:
    from auditapp.decisions import log, merkle
    from auditapp.decisions.models import Seal

    rng = random.Random(seed)
    heads = list(Seal.objects.order_by("tree_size").values_list("tree_size", "root_hash"))
    roots = {size: bytes.fromhex(root) for size, root in heads}
    latest = heads[-1][0]
    times: dict[str, list[float]] = {"inclusion": [], "consistency": []}
    for _ in range(samples):
        leaf = rng.randrange(latest)
        began = time.perf_counter()
        path = log.inclusion_path(leaf, latest)
        times["inclusion"].append(time.perf_counter() - began)
        leaf_hash = log.StoredTree().perfect(0, leaf)
        assert verify_leaf_hash(leaf_hash, leaf, latest, path, roots[latest], merkle)

        first, second = sorted(rng.choices([size for size, _ in heads], k=2))
        began = time.perf_counter()
        proof = log.consistency_path(first, second)
        times["consistency"].append(time.perf_counter() - began)
        assert merkle.verify_consistency(first, second, roots[first], roots[second], proof)
    return times


def verify_leaf_hash(leaf_hash, index, size, path, root, merkle) -> bool:
    """verify_inclusion from an already hashed leaf (the bench's leaves are random)."""
    fn, sn, node = index, size - 1, leaf_hash
    for sibling in path:
        if fn & 1 or fn == sn:
            node = merkle.node_hash(sibling, node)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            node = merkle.node_hash(node, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and node == root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--shapes", default="bulk,minutes")
    args = parser.parse_args()
    prepare()
    print(f"Proofs in a log of {args.leaves:,} leaves ({args.samples} of each, nothing cached)")
    print(f"{'shape':<9} {'seals':>7} {'build s':>8} {'proof':<12} {'median ms':>10} {'max ms':>8}")
    for shape in args.shapes.split(","):
        per_seal = SHAPES[shape]
        built = build_log(args.leaves, per_seal)
        seals = -(-args.leaves // per_seal)
        for kind, values in measure(args.samples).items():
            median, worst = 1000 * statistics.median(values), 1000 * max(values)
            print(f"{shape:<9} {seals:>7,} {built:>8.1f} {kind:<12} {median:>10.1f} {worst:>8.1f}")


if __name__ == "__main__":
    main()
