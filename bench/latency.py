"""Latency benchmark: ingestion to stored SHAP at 100 and 1,000 decisions/s.

Run with `.venv/bin/python bench/latency.py` (`make bench` runs it). Not a test:
it prints figures beside raw baselines and marks the targets met or not.

It reuses bench/explain.py's machinery (its database, attest_bench_explain, its
models, one Celery worker with 2 pool processes, the app served over HTTP by a
subprocess) and measures what that bench's figure 6 measures, at two rates:
decisions of the 30-feature GBM (100 trees, depth 3) POSTed in one request every
100 ms, 10 a request at 100/s and 100 a request at 1,000/s (LIME on demand), for
LATENCY_SECONDS; p50/p95 of a decision's `recorded_at` to its stored SHAP result
(the work row's `updated_at`). The raw baseline is `shap_values` on one request's
rows in the raw pool: the least any design pays before a request's explanations
exist.

Targets (issue 16): p95 <= 2 s at 100/s, <= 250 ms at 1,000/s.
"""

from __future__ import annotations

import os
import secrets
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import explain as bench_explain  # noqa: E402 - needs the sys.path fix above
from bench import ingest  # noqa: E402

RATES = ((100, 2.0), (1_000, 0.25))  # decisions/s, target p95 in seconds


def main() -> None:
    bench_explain.configure_env()
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ingest.ensure_database()
    ingest.setup_django()
    from django.conf import settings
    from django.core.management import call_command

    from auditapp.accounts.services import create_api_token, revoke_api_token

    call_command("migrate", verbosity=0, interactive=False)
    bench_explain.refuse_other_workers()
    print(f"broker: purged {bench_explain.purge_broker()} stale task message(s)")
    user = ingest.bench_user()
    frame, labels, background, pool = bench_explain.dataset()
    bench_explain.register_all(user, frame, labels, background)
    gbc = bench_explain.BENCHES["gbc"]
    specs = {"gbc": ("tree", gbc.model, gbc.background, gbc.positive)}
    decisions = bench_explain.Decisions(pool, secrets.token_hex(4))
    token, key = create_api_token(user, scopes=["ingest"], name="bench/latency.py")
    server = workers = client = raw = None
    results = []
    try:
        workers = bench_explain.Workers(bench_explain.PROCESSES)
        server = ingest.Server()
        raw = bench_explain.RawPool(specs)
        server.wait_ready()
        workers.wait_ready()
        client = ingest.Client(server.port, key)
        attest = bench_explain.Attest(client, workers, decisions, server.process.pid)
        attest.warm(gbc, "shap", bench_explain.PROCESSES, settings.ATTEST_EXPLAIN_BATCH_SIZE)
        for rate, target in RATES:
            bench_explain.analyze_tables()
            figures = bench_explain.latency_figure(attest, raw, rate)
            results.append((rate, target, figures))
            print(f"{rate}/s: done", flush=True)
    finally:
        if client is not None:
            client.close()
        if raw is not None:
            raw.close()
        if server is not None:
            server.stop()
        if workers is not None:
            workers.stop()
            if not os.environ.get("BENCH_KEEP_WORKER_LOG"):
                workers.log_path.unlink(missing_ok=True)
        revoke_api_token(token)
        bench_explain.purge_broker()

    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(
        f"ingestion -> stored SHAP, {gbc.name} (GBM 100 x depth 3, 30 features); one POST "
        f"every {bench_explain.LATENCY_TICK * 1000:.0f} ms for "
        f"{bench_explain.LATENCY_SECONDS} s; 1 worker, {bench_explain.PROCESSES} pool "
        f"processes; batches of {settings.ATTEST_EXPLAIN_BATCH_SIZE}; {os.cpu_count()} CPUs; "
        f"load average {load_before} before, {load_after} after"
    )
    rows = []
    for _rate, target, lat in results:
        rows.append(
            (
                f"p95 at {lat['sent_rate']:,.0f}/s ({lat['rows']:,} decisions, "
                f"{lat['late_ticks']} late POSTs)",
                f"{lat['p95'] * 1000:,.0f} ms (p50 {lat['p50'] * 1000:,.0f}, max "
                f"{lat['max'] * 1000:,.0f})",
                f"{lat['raw_p95'] * 1000:,.1f} ms (p50 {lat['raw_p50'] * 1000:,.1f})",
                f"{lat['p95'] / lat['raw_p95']:,.1f}x raw",
                f"{bench_explain.met(lat['p95'] <= target)} (<= {target * 1000:,.0f} ms)",
            )
        )
    bench_explain.print_table(rows, ("figure", "Attest", "raw (one POST's rows)", "ratio", "met?"))


if __name__ == "__main__":
    main()
