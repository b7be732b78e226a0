"""Page benchmark: the pages people open every day, at a bank's volume of decisions and events.

Run with `.venv/bin/python bench/pages.py` (`make bench` runs it). Not a test: it prints
figures beside a raw baseline.

1. DATABASE_URL (default postgres://postgres@127.0.0.1:5432/attest_bench_pages) is created
   if missing and migrated; the demo credit model is registered.
2. It is topped up to --decisions decisions (default 2,000,000) by COPY, as
   bench/chain.py writes them, and to --events access-log events (default 2,000,000) by
   one INSERT ... SELECT; then the sealing task runs (a seal, and the version tallies).
3. Each page is visited --visits times (default 20) in-process by Django's test client
   signed in as a compliance officer (routing, permissions, queries, templates, the audit
   event a visit writes), p50 and p95 printed. The baseline in the same run: psycopg
   reading a page of 50 decisions by primary key, the least any list page reads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/attest_bench_pages"
PAGES = (
    "/",
    "/models/",
    "/models/{model}/versions/{version}/",
    "/decisions/?model={model}",
    "/audit/",
    "/audit/?page=200",
    "/review/",
    "/monitoring/",
)


def top_up_events(target: int) -> int:
    """INSERT access-log events (a search in ten, ingestion otherwise) up to `target`."""
    from django.db import connection

    from auditapp.accounts.models import AuditEvent

    missing = target - AuditEvent.objects.count()
    if missing <= 0:
        return 0
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounts_auditevent (at, actor_name, action, object_type, object_id,"
            " ip, details, actor_id, content_hash, salt, sensitive_details, model)"
            " SELECT now() - g * interval '1 millisecond', 'bench-pages',"
            " CASE WHEN g %% 10 = 0 THEN 'decisions.searched' ELSE 'decisions.ingested' END,"
            " 'decision', g::text, '10.0.0.1', '{}', NULL, md5(g::text) || md5(g::text),"
            " NULL, '{}', 'credit' FROM generate_series(1, %s) g",
            [missing],
        )
        cursor.execute("ANALYZE accounts_auditevent")
    print(f"wrote {missing:,} events in {time.perf_counter() - began:.0f} s")
    return missing


def raw_page_ms(visits: int) -> list[float]:
    """psycopg alone: the newest 50 decisions by primary key, every column."""
    import psycopg

    from bench import ingest

    times = []
    with psycopg.connect(**ingest.database_params()) as conn, conn.cursor() as cursor:
        for _ in range(visits):
            began = time.perf_counter()
            cursor.execute("SELECT * FROM decisions_decision ORDER BY id DESC LIMIT 50")
            cursor.fetchall()
            times.append((time.perf_counter() - began) * 1000)
    return times


def timed(client, url: str, visits: int) -> list[float]:
    client.get(url)  # warm: templates, the version's schema
    times = []
    for _ in range(visits):
        began = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            sys.exit(f"{url} answered {response.status_code}")
    return times


def percentiles(times: list[float]) -> str:
    p95 = statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]
    return f"{statistics.median(times):.1f} / {p95:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=2_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--visits", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)

    from bench import chain, search

    user, version, model = chain.prepare()
    from django.db import connection

    from auditapp.decisions.models import Decision
    from auditapp.decisions.tasks import seal_records

    chain.top_up(user, version, model, args.decisions)
    top_up_events(args.events)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE decisions_decision")
    began = time.perf_counter()
    seal_records()
    print(f"sealing task (seals and version tallies): {time.perf_counter() - began:.1f} s")

    client = search.officer_client()
    names = {"model": version.registered_model.name, "version": version.version}
    decisions = Decision.objects.count()
    print(f"\n{decisions:,} decisions; pages as a compliance officer, p50 / p95 of {args.visits}")
    rows = [(url.format(**names), percentiles(timed(client, url.format(**names), args.visits)))
            for url in PAGES]  # fmt: skip
    raw = percentiles(raw_page_ms(args.visits))
    width = max(len(url) for url, _ in rows)
    print(f"{'page'.ljust(width)} | Attest p50 / p95 | raw: 50 decisions by primary key")
    for url, figure in rows:
        print(f"{url.ljust(width)} | {figure} | {raw}")


if __name__ == "__main__":
    main()
