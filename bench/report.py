"""Report benchmark: a compliance report PDF over 100,000 decisions, and verify_chain.

Run with `.venv/bin/python bench/report.py` (`make bench` runs it). Not a test:
it prints figures beside raw baselines.

1. DATABASE_URL (default postgres://postgres@127.0.0.1:5432/attest_bench_report)
   is created if missing and migrated; the demo credit model is registered.
2. The version is topped up to --decisions decisions (default 100,000; the
   issue asks for 1,000,000) spread over 30 days, recorded through the
   ingestion service (record_decisions, batches of 10,000), each with a
   finished SHAP explanation (attributions drawn at random: the figure
   measured is the report, not SHAP), LIME for one in ten (the version's LIME
   sampling), outcomes for one in five (record_outcomes).
3. A compliance report for the whole period is requested and generated as PDF,
   in this process, timed (target <= 30 s); the baseline is PostgreSQL alone
   computing the headline aggregates (per day, prediction mix, mean |SHAP| per
   feature) as raw SQL. Printed beside it: each section's time, this process's
   CPU time and the load average (the machine is shared: figures vary with it).
4. bench/chain.py runs as a subprocess on its own database (attest_bench_chain):
   verify_chain over 1,000,000 decisions (target >= 100,000 decisions/s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/attest_bench_report"
TARGET_SECONDS = 30.0
DAYS = 30
DISTINCT = 5_000


def prepare():
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_REPORT_DATABASE_URL", DEFAULT_DATABASE_URL)
    from bench import ingest

    ingest.configure_env()
    # LIME for one decision in ten, sampled by content hash as the product does: set at
    # registration, as a user would (an update of the row would bypass the record log, and
    # verify_chain would then report the version as changed).
    return ingest.prepare(explain={"lime": "sample", "lime_sample_rate": 0.1})


def top_up(user, version, model, target: int, end: datetime) -> int:
    """Record decisions through the ingestion service until the version has `target`.

    Batches of ATTEST_MAX_BATCH through record_decisions (as an API client would
    send them, COPY on PostgreSQL), then each batch's pending explanations are
    finished with drawn attributions (the figure measured is the report, not
    SHAP; bench/storage.py runs the real explainers) and one outcome in five is
    recorded through record_outcomes.
    """
    from django.conf import settings

    from auditapp.accounts import roles
    from auditapp.decisions.models import Decision
    from auditapp.decisions.services import record_decisions
    from bench import ingest
    from bench.storage import no_broker

    missing = target - Decision.objects.filter(model_version=version).count()
    if missing <= 0:
        return 0
    no_broker()
    if version.lime_mode != "sample":
        sys.exit(
            f"{version} was registered before this bench sampled LIME at registration; drop "
            "its database (dropdb attest_bench_report) and run again."
        )
    payloads = ingest.Payloads(model, DISTINCT, "5e9047").items
    actor = roles.Actor(user=user)
    rng = np.random.default_rng(7)
    began = time.perf_counter()
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    step = timedelta(days=DAYS) / missing
    start = end - timedelta(days=DAYS)
    for first in range(0, missing, settings.ATTEST_MAX_BATCH):
        items, outcomes = [], []
        for n in range(first, min(first + settings.ATTEST_MAX_BATCH, missing)):
            payload = payloads[n % len(payloads)]
            item = {
                **payload,
                "request_id": f"report-{run}-{n}",
                "predicted_at": (start + n * step).isoformat(),
            }
            items.append(item)
            if n % 5 == 0:
                outcome = "bad" if rng.random() < (payload.get("score") or 0.5) else "good"
                outcomes.append((item["request_id"], outcome))
        record_decisions(actor, {"decisions": items}, source="import")
        _finish_explanations(version, rng)
        _record_outcomes(actor, version, outcomes, end)
        done = first + len(items)
        print(f"  {done:,} / {missing:,} recorded ({time.perf_counter() - began:.0f} s)")
    seconds = time.perf_counter() - began
    print(f"recorded {missing:,} decisions with explanations in {seconds:.0f} s")
    return missing


def _finish_explanations(version, rng) -> None:
    """Every pending explanation of the version becomes done, with a drawn result."""
    import orjson
    from django.db import connection, transaction

    from auditapp.registry.agreement import judge_agreement
    from auditapp.registry.models import agreement_settings
    from bench import ingest
    from explain import packing, records
    from explain.models import ExplanationResult
    from explain.reasons import replace_top_reasons

    names = version.parsed_schema.names
    scale = np.linspace(0.6, 0.02, len(names))  # some features matter more than others
    config_ids = {method: ingest.bench_config_id(version, method) for method in ("shap", "lime")}
    thresholds = agreement_settings(version.explain_settings)
    now = datetime.now(UTC)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT e.id, e.decision_id, e.method FROM explain_explanation e "
            "JOIN decisions_decision d ON d.id = e.decision_id "
            "WHERE d.model_version_id = %s AND e.status = 'pending' ORDER BY e.id",
            [version.pk],
        )
        pending = cursor.fetchall()
        result_ids = ingest.reserve_ids(cursor, ExplanationResult, len(pending))
        results, agreements = [], []
        for result_id, (_id, decision_id, method) in zip(result_ids, pending, strict=True):
            values = rng.normal(0.0, scale)
            attributions = dict(zip(names, values.round(6).tolist(), strict=True))
            top = [names[i] for i in np.argsort(-np.abs(values), kind="stable")]
            agreement = None
            if method == "shap":
                quality = {"additivity_error": 1e-7, "additivity_ok": True}
            else:
                quality = {"fidelity_r2": 0.8}
                figures = {
                    "top_k": 3,
                    "top_k_overlap": float(rng.choice([1 / 3, 2 / 3, 1.0])),
                    "rank_correlation": 0.7,
                }
                agreement = {**figures, **judge_agreement(figures, 0.8, thresholds)}
            agreements.append(None if agreement is None else orjson.dumps(agreement).decode())
            row = (
                *(decision_id, method, config_ids[method], -0.7),
                packing.pack(attributions, names),
                orjson.dumps(top[: records.STORED_TOP]).decode(),
                orjson.dumps(quality).decode(),
                decision_id,
                1.5 if method == "shap" else 90.0,
                None,
            )
            results.append(ingest.result_row(result_id, row, now))
        ingest.copy_model_rows(cursor, ExplanationResult, results)
        shap_results = [r for r in results if r["config_id"] == config_ids["shap"]]
        moments = ingest.predicted_at_of(cursor, [r["decision_id"] for r in shap_results])
        replace_top_reasons(
            [
                (r["decision_id"], moments[r["decision_id"]], orjson.loads(r["top_features"]))
                for r in shap_results
            ]
        )
        cursor.execute(
            "UPDATE explain_explanation e SET status = 'done', attempts = 1, "
            "result_id = v.result_id, agreement = v.agreement::jsonb, updated_at = %s "
            "FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS v(id, result_id, agreement) "
            "WHERE e.id = v.id",
            [now, [row[0] for row in pending], result_ids, agreements],
        )


def _record_outcomes(actor, version, outcomes: list[tuple[str, str]], end: datetime) -> None:
    from auditapp.decisions.outcomes import record_outcomes

    if outcomes:
        items = [
            {
                "model": version.registered_model.name,
                "request_id": request_id,
                "outcome": outcome,
                "observed_at": end.isoformat(),
            }
            for request_id, outcome in outcomes
        ]
        record_outcomes(actor, {"outcomes": items}, source="import")


def raw_aggregates_seconds(version, start: datetime, end: datetime) -> float:
    """The headline aggregates as PostgreSQL alone computes them (one statement each; mean
    |SHAP| streams the packed attributions and sums them with NumPy, as the report does)."""
    from django.db import connection

    from explain.packing import unpack_matrix

    width = len(version.parsed_schema.names)
    where = "d.model_version_id = %s AND d.predicted_at >= %s AND d.predicted_at < %s"
    statements = [
        f"SELECT date_trunc('day', predicted_at), count(*) FROM decisions_decision d "
        f"WHERE {where} GROUP BY 1 ORDER BY 1",
        f"SELECT prediction, count(*) FROM decisions_decision d WHERE {where} GROUP BY 1",
        f"SELECT r.attributions FROM explain_explanation e JOIN decisions_decision d "
        f"ON d.id = e.decision_id JOIN explain_explanationresult r ON r.id = e.result_id "
        f"WHERE {where} AND e.method = 'shap' AND e.status = 'done'",
    ]
    began = time.perf_counter()
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, [version.pk, start, end])
            rows = cursor.fetchall()
        np.abs(unpack_matrix([packed for (packed,) in rows], width)).mean(axis=0)
    return time.perf_counter() - began


def report_rows(decisions: int) -> list[tuple[str, str, str, str]]:
    user, version, model = prepare()
    from django.db import connection

    from auditapp.accounts import roles
    from auditapp.accounts.services import create_user
    from auditapp.decisions.models import Decision
    from auditapp.reports import services

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    top_up(user, version, model, decisions, end)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    officer = roles.Actor(user=_officer(create_user))
    first = Decision.objects.filter(model_version=version).order_by("predicted_at").first()
    start = first.predicted_at.replace(hour=0, minute=0, second=0, microsecond=0)
    period_end = end + timedelta(hours=1)
    count = Decision.objects.filter(
        model_version=version, predicted_at__gte=start, predicted_at__lt=period_end
    ).count()
    body = {
        "kind": "model_compliance",
        "model": version.registered_model.name,
        "version": version.version,
        "from": start.isoformat(),
        "to": period_end.isoformat(),
        "format": "pdf",
    }
    report = services.request_report(officer, body, via="bench")
    sections: dict[str, float] = {}
    began, cpu = time.perf_counter(), time.process_time()
    with _timed_sections(sections):
        report = services.generate_report(report.pk)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    load = os.getloadavg()[0]
    if report.status != "done":
        sys.exit(f"the report failed: {report.error}")
    raw = raw_aggregates_seconds(version, start, period_end)
    met = "met" if seconds <= TARGET_SECONDS else "NOT met"
    size = report.file.size
    built = sum(sections.values())
    print(
        "sections: "
        + ", ".join(f"{name} {took:.1f} s" for name, took in sections.items())
        + f"; rendering and storing {seconds - built:.1f} s"
    )
    return [
        (
            f"compliance report PDF, {count:,} decisions, s",
            f"{seconds:.1f} s ({size / 1024:.0f} KiB; this process's CPU {cpu:.1f} s; "
            f"load {load:.1f})",
            f"{raw:.2f} s (3 raw SQL aggregates)",
            f"target <= {TARGET_SECONDS:.0f} s {met}",
        )
    ]


@contextlib.contextmanager
def _timed_sections(sections: dict[str, float]):
    """Each section of the compliance document timed (wall) while the report is generated."""
    from auditapp.reports import compliance

    original = list(compliance.SECTIONS)

    def timed(name, build):
        def run(ctx):
            began = time.perf_counter()
            try:
                return build(ctx)
            finally:
                sections[name] = time.perf_counter() - began

        return run

    compliance.SECTIONS[:] = [(name, timed(name, build)) for name, build in original]
    try:
        yield
    finally:
        compliance.SECTIONS[:] = original


def _officer(create_user):
    from django.contrib.auth import get_user_model

    from auditapp.accounts import roles

    user = get_user_model().objects.filter(username="bench-compliance").first()
    return user or create_user("bench-compliance", roles.COMPLIANCE_OFFICER)


def chain_rows(decisions: int) -> list[tuple[str, str, str, str]]:
    """bench/chain.py in a subprocess on its own database (attest_bench_chain), read back."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chain.py"), "--decisions", str(decisions)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if line.count(" | ") == 3]
    return [tuple(cell.strip() for cell in line.split(" | ")) for line in lines[1:]]


def print_table(rows) -> None:
    header = ("figure", "Attest", "raw baseline", "ratio / target")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--chain-decisions", type=int, default=1_000_000)
    parser.add_argument("--skip-chain", action="store_true")
    args = parser.parse_args()
    rows = report_rows(args.decisions)
    if not args.skip_chain:
        rows += chain_rows(args.chain_decisions)
    print_table(rows)


if __name__ == "__main__":
    main()
