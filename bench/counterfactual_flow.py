"""Counterfactuals end to end: the demo's declined decisions through a real `explain-cf` worker.

Run with `.venv/bin/python bench/counterfactual_flow.py`. Not a test: it prints figures.

1. DATABASE_URL (default postgres://postgres@127.0.0.1:5432/attest_bench_cf_flow) is
   dropped, created and migrated: the bench's own database, fresh each run.
   CELERY_BROKER_URL defaults to Redis db 12, purged at the start and the end.
2. `load_demo --decisions 2000` (as `make run`): the demo model, its 2,000 decisions, a
   work row for each declined one. The explanation tasks it queued are purged: this
   bench measures counterfactuals alone.
3. A real worker, `celery -A auditapp worker -Q explain-cf --concurrency 2` (one BLAS
   thread a process), started and ready; then every pending row is sent (8 a task, as
   ingestion sends them) and the bench polls the database until none is pending.
4. Figures: decisions searched per second (wall, send to last stored), each search's
   duration (p50, p95), how many found 3, fewer, none, and the mean sparsity, distance
   and plausibility of what was stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ingest  # noqa: E402  (bench/ingest.py: the database and settings helpers)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/attest_bench_cf_flow"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/12"
DECISIONS = int(os.environ.get("BENCH_CF_DECISIONS", "2000"))
PROCESSES = 2
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def configure_env() -> None:
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    os.environ.setdefault("ATTEST_VAR_DIR", tempfile.mkdtemp(prefix="bench-cf-flow-"))
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    ingest.configure_env()


def fresh_database() -> None:
    import psycopg
    from psycopg import sql

    params = ingest.database_params()
    with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(params["dbname"])))
    ingest.ensure_database()


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    configure_env()
    fresh_database()
    ingest.setup_django()
    from io import StringIO

    from django.core.management import call_command

    from auditapp.celery import app
    from explain import counterfactual_work
    from explain.models import CounterfactualWork

    call_command("migrate", verbosity=0, interactive=False)
    if app.control.ping(timeout=1.0):
        raise SystemExit("a worker already consumes the bench's broker: stop it first")

    started = time.perf_counter()
    call_command("load_demo", "--decisions", str(DECISIONS), stdout=StringIO())
    print(f"demo loaded: {DECISIONS} decisions in {time.perf_counter() - started:.0f} s")
    from explain.publishing import wait_until_published

    wait_until_published()
    app.control.purge()
    rows = CounterfactualWork.objects.select_related("decision__model_version")
    pending = list(rows.values_list("decision__model_version_id", "decision_id"))
    print(f"declined decisions with a work row: {len(pending)}")

    log = Path(tempfile.mkstemp(prefix="bench-cf-worker-", suffix=".log")[1])
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "auditapp", "worker", "-Q", "explain-cf"),
            *("--concurrency", str(PROCESSES), "--loglevel", "INFO", "--without-gossip"),
            *("--without-mingle", "--hostname", f"bench-cf-{os.getpid()}@bench"),
        ],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "INFO"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while " ready." not in log.read_text(errors="replace"):
            if worker.poll() is not None:
                raise SystemExit(log.read_text()[-3000:])
            time.sleep(0.2)  # poll interval
        by_version: dict[int, list[int]] = {}
        for version_id, decision_id in pending:
            by_version.setdefault(version_id, []).append(decision_id)
        sent_at = time.perf_counter()
        tasks = counterfactual_work.send(by_version)
        waiting = CounterfactualWork.objects.exclude(
            status__in=[CounterfactualWork.DONE, CounterfactualWork.FAILED]
        )
        while waiting.exists():
            if worker.poll() is not None:
                raise SystemExit(log.read_text()[-3000:])
            time.sleep(0.2)  # poll interval
        wall = time.perf_counter() - sent_at
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
        app.control.purge()

    import numpy as np

    done = list(rows.select_related("result"))
    failed = [w for w in done if w.status != CounterfactualWork.DONE]
    durations = [w.result.duration_ms for w in done if w.result]
    found = [w.result.found for w in done if w.result]
    items = [c for w in done if w.result for c in w.result.counterfactuals]
    print(f"tasks sent: {tasks}; {PROCESSES} worker processes; load {os.getloadavg()[0]:.1f}")
    print(
        f"{len(done)} decisions searched in {wall:.1f} s: {len(done) / wall:.1f} a second; "
        f"failed {len(failed)}"
    )
    print(
        f"per search: p50 {percentile(durations, 50):.0f} ms, p95 "
        f"{percentile(durations, 95):.0f} ms, max {max(durations):.0f} ms"
    )
    print(
        f"found 3: {sum(f == 3 for f in found)}, 1-2: {sum(0 < f < 3 for f in found)}, "
        f"none: {sum(f == 0 for f in found)}"
    )
    sparsity = np.mean([c["sparsity"] for c in items])
    distance = np.mean([c["distance"] for c in items])
    plausibility = np.mean([c["plausibility"] for c in items if c["plausibility"] is not None])
    print(
        f"{len(items)} counterfactuals: mean sparsity {sparsity:.2f}, mean distance "
        f"{distance:.2f}, mean plausibility {plausibility:.2f}"
    )


if __name__ == "__main__":
    main()
