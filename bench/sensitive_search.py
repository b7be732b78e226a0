"""Exact search on a sensitive feature (its blind index) against a plain feature, at 100,000
decisions.

Run with `.venv/bin/python bench/sensitive_search.py` (`--decisions N`). Not a test: it
prints p50 and p95 of each search through the API (DRF's test client, signed in as the
bench's admin: routing, permissions, the filters, the audit event, JSON; no socket).

1. DATABASE_URL (default postgres://postgres@127.0.0.1:5432/attest_bench_crypt) is
   created if missing and migrated; the demo credit model is registered.
2. Decisions are recorded through the product's ingestion (record_decisions: the COPY
   path, sealing the sensitive inputs and writing their blind index) until there are
   --decisions. Then ANALYZE.
3. The searches, each for a value one decision has and for a value no one has:
   `feature.income=<v>` (sensitive: the HMAC token, `sensitive_tokens @> {...}`, its GIN
   index) and `feature.debt_ratio=<v>` (plain: `inputs -> 'debt_ratio' = v`, no index:
   the page walks the time index until it has 50 rows or reaches the end).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/attest_bench_crypt"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/12"
BATCH = 10_000
WARMUP, REPS = 5, 40


def fill(user, model, target: int) -> int:
    from auditapp.accounts import roles
    from auditapp.decisions.models import Decision
    from auditapp.decisions.services import record_decisions
    from bench import ingest

    have = Decision.objects.count()
    missing = max(0, target - have)
    if not missing:
        return have
    payloads = ingest.Payloads(model, missing, secrets.token_hex(4))
    began = time.perf_counter()
    while missing:
        n = min(BATCH, missing)
        record_decisions(roles.Actor(user=user), {"decisions": payloads.take(n)})
        missing -= n
    print(f"recorded {target - have:,} decisions in {time.perf_counter() - began:.1f} s")
    ingest.purge_broker(os.environ["CELERY_BROKER_URL"])
    return target


def timed(client, params: dict) -> tuple[float, float, int]:
    for _ in range(WARMUP):
        client.get("/api/v1/decisions", params, HTTP_HOST="localhost")
    times = []
    for _ in range(REPS):
        began = time.perf_counter()
        answer = client.get("/api/v1/decisions", params, HTTP_HOST="localhost")
        times.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, answer.content
    found = len(answer.json()["results"])
    return statistics.median(times), statistics.quantiles(times, n=20)[18], found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=100_000)
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_CRYPT_DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    from bench import ingest

    ingest.configure_env()
    user, _version, model = ingest.prepare()
    from django.db import connection
    from rest_framework.test import APIClient

    from auditapp.decisions.models import Decision

    total = fill(user, model, args.decisions)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE decisions_decision")
    sample = Decision.objects.filter(sealed_inputs__isnull=False).order_by("pk")[total // 2]
    inputs = sample.full_inputs()
    client = APIClient()
    client.force_authenticate(user)
    searches = {
        "sensitive income = a value one has": {"feature.income": str(inputs["income"])},
        "sensitive income = a value no one has": {"feature.income": "123.456"},
        "plain debt_ratio = a value one has": {"feature.debt_ratio": str(inputs["debt_ratio"])},
        "plain debt_ratio = a value no one has": {"feature.debt_ratio": "2.9999"},
    }
    print(f"{total:,} decisions; each search {REPS} times after {WARMUP}, through the API")
    for label, params in searches.items():
        p50, p95, found = timed(client, {"model": "credit", "limit": "50", **params})
        print(f"  {label:40} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  ({found} found)")


if __name__ == "__main__":
    main()
