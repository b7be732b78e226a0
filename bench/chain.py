"""Hash-chain benchmark: sealing and `verify_chain` over 1,000,000 decisions.

Run with `.venv/bin/python bench/chain.py` (bench/report.py runs it too, and
`make bench` runs that). Not a test: it prints figures beside raw baselines.

1. DATABASE_URL (default postgres://postgres@127.0.0.1:5432/attest_bench_chain)
   is created if missing and migrated; the demo credit model is registered.
2. The table is topped up to --decisions decisions (default 1,000,000) of
   realistic credit inputs, written with COPY as rows built by the product's own
   row builder (a benchmark of verification, not of ingestion: document form 2,
   salted commitments, the sensitive values sealed) and the ingestion event naming
   their ids, then sealed. Rows an older bench wrote in the form before commitments
   are cheaper to verify: the bench says so, and dropping the database starts afresh.
3. verify_chain runs over everything twice, timed: in one process (the audit page's
   job) and in a process per core (`manage.py verify_chain`); the baselines in the same run are
   PostgreSQL alone streaming the same columns to psycopg (no hashing), and
   Python alone hashing the same canonical documents already in memory.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/attest_bench_chain"
TARGET_RATE = 100_000  # decisions verified per second
DISTINCT = 20_000  # distinct applicants, cycled with fresh request ids


def prepare():
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    from bench import ingest

    ingest.configure_env()
    return ingest.prepare()


def top_up(user, version, model, target: int) -> int:
    """COPY decisions until there are `target`; returns how many were added."""
    from django.db import connection

    from auditapp.decisions.models import Decision
    from auditapp.decisions.services import DECISION_COLUMNS
    from bench import ingest

    missing = target - Decision.objects.count()
    if missing <= 0:
        return 0
    payloads = ingest.Payloads(model, min(DISTINCT, missing), "c0ffee01").items
    began = time.perf_counter()
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    recorded = datetime.now(UTC)
    # The related model is loaded now: a query on this connection in the middle of the
    # COPY below would wait for the COPY to finish, for ever.
    model_name = version.registered_model.name
    with connection.cursor() as cursor:
        ids = ingest.reserve_decision_ids(cursor, missing)
        copy_sql = f"COPY decisions_decision ({', '.join(DECISION_COLUMNS)}) FROM STDIN"
        with cursor.cursor.copy(copy_sql) as copy:
            for n, decision_id in enumerate(ids):
                payload = payloads[n % len(payloads)]
                predicted_at = datetime.fromisoformat(payload["predicted_at"])
                row = ingest.copy_decision_row(
                    version,
                    model_name,
                    payload,
                    decision_id=decision_id,
                    request_id=f"chain-{run}-{n}",
                    predicted_at=predicted_at + timedelta(microseconds=n),
                    recorded_at=recorded,
                    client="bench/chain.py",
                )
                copy.write_row(row)
                if n % 100_000 == 99_999:
                    print(f"  {n + 1:,} / {missing:,} written", flush=True)
    record_ingestion(user, model_name, ids)
    print(f"wrote {missing:,} decisions in {time.perf_counter() - began:.0f} s")
    return missing


def record_ingestion(user, model_name: str, ids: list[int]) -> None:
    """The audit event ingestion writes, naming the ids it created: verification reconciles
    every decision with one (a decision no event names was not written by Attest)."""
    from collections import Counter

    from auditapp.accounts import roles
    from auditapp.accounts.audit import id_runs, record_counts_per_model
    from auditapp.decisions.models import INGESTED_EVENT

    counts = Counter({model_name: len(ids)})
    record_counts_per_model(
        INGESTED_EVENT,
        counts,
        counts,
        per_model={model_name: {"ids": id_runs(ids)}},
        actor=roles.Actor(user=user),
        object_type="decisions.decision",
        source="import",
    )


def raw_fetch_rate() -> tuple[float, int]:
    """PostgreSQL streaming the columns verification reads (all of them, as text where it
    reads text), to psycopg, nothing else."""
    from django.db import connection, transaction

    from auditapp.decisions import rehashing

    columns = rehashing._decision_columns()  # exactly what verification reads
    began, rows = time.perf_counter(), 0
    with transaction.atomic():
        cursor = connection.chunked_cursor()
        cursor.execute(f"SELECT {', '.join(columns)} FROM decisions_decision ORDER BY id")
        while chunk := cursor.fetchmany(rehashing.CHUNK):
            rows += len(chunk)
        cursor.close()
    return rows / (time.perf_counter() - began), rows


def raw_hash_rate(count: int = 200_000) -> float:
    """hashlib + orjson over canonical documents already in memory (no database)."""
    import orjson

    from auditapp.decisions.models import Decision

    sample = list(
        Decision.objects.order_by("id").values(
            "request_id", "subject_ref", "inputs", "prediction", "score", "source", "metadata"
        )[:DISTINCT]
    )
    documents = [{**sample[i % len(sample)], "predicted_at": "2026-11-20T10:00:00.000000+00:00"}
                 for i in range(count)]  # fmt: skip
    began = time.perf_counter()
    for document in documents:
        hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).digest()
    return count / (time.perf_counter() - began)


def run(decisions: int) -> list[tuple[str, str, str, str]]:
    """The chain figures as table rows: figure, Attest, raw, ratio."""
    user, version, model = prepare()
    from django.db import connection

    from auditapp.decisions.models import Decision
    from auditapp.decisions.sealing import seal_new_records
    from auditapp.decisions.verification import verify_chain

    top_up(user, version, model, decisions)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE decisions_decision")
    began = time.perf_counter()
    seals = seal_new_records()
    sealed = sum(s.decision_count for s in seals)
    seal_s = time.perf_counter() - began
    if sealed:
        print(f"sealed {sealed:,} decisions into {len(seals)} seal(s) in {seal_s:.1f} s")

    total = Decision.objects.count()
    if older := Decision.objects.filter(document_form__isnull=True).count():
        print(
            f"note: {older:,} of the {total:,} decisions are in the form before commitments "
            "(written by an older bench), cheaper to verify than today's: drop the database "
            "to measure today's rows alone"
        )
    timed = {}
    for processes in (False, True):
        began = time.perf_counter()
        result = verify_chain(processes=processes)
        timed[processes] = time.perf_counter() - began
        if not result.ok:
            sys.exit(f"verification failed: {result.first_bad}")
    fetch_rate, _ = raw_fetch_rate()
    hash_rate = raw_hash_rate()
    rows = [
        (
            f"verify_chain, {total:,} decisions (+{result.events:,} events)",
            f"{timed[True]:.1f} s (manage.py, a process per core); "
            f"{timed[False]:.1f} s (one process, the audit page's job)",
            "",
            "",
        )
    ]
    for processes, label in ((True, "manage.py verify_chain"), (False, "one process")):
        rate = result.decisions / timed[processes]
        met = "met" if rate >= TARGET_RATE else "NOT met"
        rows.append(
            (
                f"{label}, decisions/s",
                f"{rate:,.0f}/s",
                f"{fetch_rate:,.0f}/s (fetch only)",
                f"{rate / fetch_rate:.2f}x fetch (target 0.8x); >= {TARGET_RATE:,}/s {met}",
            )
        )
    rows.append(("hashing alone (orjson + sha256, in memory)", "", f"{hash_rate:,.0f}/s", ""))
    return rows


def print_table(rows) -> None:
    header = ("figure", "Attest", "raw", "ratio")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    args = parser.parse_args()
    print_table(run(args.decisions))


if __name__ == "__main__":
    main()
