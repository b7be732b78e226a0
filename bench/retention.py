"""Retention of inputs at scale: erasing 100,000 decisions' inputs in one run.

Run with `.venv/bin/python bench/retention.py [--count 100000]` against PostgreSQL
(DATABASE_URL, default postgres://postgres@127.0.0.1:5432/attest_bench_retention). Not a
test: it prints figures. It records `--count` decisions of the demo credit model
predicted 40 days ago (through record_decisions, in batches of 10,000), seals them,
gives the model a 30-day period and times `apply_retention`: the plan (counts by model
and month, holds), the commitments computed per row, and the one set-based UPDATE
through the append-only triggers. Then verify_chain, timed too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/attest_bench_retention")

from bench import ingest as bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    bench.configure_env()
    bench.ensure_database()
    bench.setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from auditapp.accounts import roles
    from auditapp.decisions import erasure, input_retention
    from auditapp.decisions.models import Decision, RetentionPolicy
    from auditapp.decisions.sealing import seal_new_records
    from auditapp.decisions.services import record_decisions
    from auditapp.decisions.verification import verify_chain
    from auditapp.demo import credit

    erasing = logging.getLogger("auditapp.decisions.erasure")
    erasing.setLevel(logging.INFO)
    erasing.addHandler(logging.StreamHandler(sys.stdout))
    user = bench.bench_user()
    version, model = bench.bench_model(user)
    actor = roles.Actor(user=user)
    frame = credit.applicants(args.count, seed=3)
    start = datetime.now(UTC) - timedelta(days=40)
    items = list(
        credit.decision_payloads(
            model,
            frame,
            model_name=bench.MODEL,
            version=bench.VERSION,
            start=start,
            spacing=timedelta(milliseconds=1),
        )
    )
    tag = uuid.uuid4().hex[:8]
    for i, item in enumerate(items):
        item["request_id"] = f"retention-{tag}-{i:06d}"
    began = time.perf_counter()
    for at in range(0, len(items), 10_000):
        record_decisions(actor, {"decisions": items[at : at + 10_000]}, source="api")
    print(f"recorded {len(items):,} decisions in {time.perf_counter() - began:.1f} s")
    seal_new_records()
    RetentionPolicy.objects.update_or_create(
        registered_model=version.registered_model, defaults={"days": 30}
    )
    system = roles.system_actor()
    began = time.perf_counter()
    (run,) = input_retention.plan_retention(model_name=bench.MODEL)
    planned = time.perf_counter() - began
    began = time.perf_counter()
    erasure.erase(system, run.plan, via="command")
    erased = time.perf_counter() - began
    n = len(run.plan.ids)
    print(
        f"plan: {planned:.2f} s; erase {n:,} decisions' inputs: {erased:.2f} s "
        f"({n / erased:,.0f} a second)"
    )
    total = Decision.objects.filter(kept_commitments__isnull=False).count()
    print(f"erased in the database: {total:,}")
    seal_new_records()
    began = time.perf_counter()
    result = verify_chain(processes=True)
    print(
        f"verify_chain: ok={result.ok} decisions={result.decisions:,} "
        f"in {time.perf_counter() - began:.1f} s"
    )


if __name__ == "__main__":
    try:
        main()
    finally:
        from auditapp.celery import app as celery_app

        celery_app.control.purge()  # the explanation tasks recording enqueued; no worker ran
