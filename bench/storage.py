"""Storage benchmark: bytes per decision on PostgreSQL, beside the same facts as packed arrays.

Run with `.venv/bin/python bench/storage.py` (`--decisions N`, default 100,000;
`--lime-fraction F`, default 0.05). Not a test: it prints figures beside raw
baselines. Target: everything Attest keeps for a decision <= 1.2 KB (1,200 B).

1. The database attest_bench_storage (BENCH_STORAGE_DATABASE_URL) is dropped,
   created and migrated: its sizes are this run's alone. The demo credit model
   is registered (10 features).
2. N demo applicants are recorded through the ingestion service
   (record_decisions, --batch per call: validation, content hash, COPY, the
   pending explanation rows and one audit event per call), spread over 30 days.
3. SHAP for every decision and LIME for a fraction of them, in this process,
   through the workers' own batch (explain.batches.run_batch: claim, engine,
   insert-only results, their log records, agreement, the review rules, which
   open the review cases). Nothing is sent to a broker.
4. The older half gets its outcome (record_outcomes, observed five days after,
   as load_demo does); then seal_new_records seals everything.
5. VACUUM (ANALYZE), sizes of every table (heap, TOAST, each index); VACUUM
   FULL, sizes again. LIME takes 50-100 ms a decision, so unless
   --lime-fraction is 1 the tables LIME adds to (results, work rows, log
   records, seals) are extrapolated to every decision and labelled so
   (lime_ratios). Checked at N = 4,000: the extrapolated total from 5 % was
   within 1.2 % (as written) and 0.7 % (compacted) of LIME run for all.
6. The raw baseline: per decision an id, the version id, two timestamps, the
   score, the prediction, the inputs as float64 x features and the SHAP and
   LIME attributions as float64 x features each; as NumPy `.nbytes`, and as
   a bare PostgreSQL table (packed bytea, no index) with N rows, so that the
   row overhead is counted too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/attest_bench_storage"
TARGET_BYTES = 1200  # per decision, everything included
PERIOD = timedelta(days=30)
OUTCOME_DELAY = timedelta(days=5)
RAW_TABLE = "bench_raw_storage"

# Tables by what they hold; every other table (users, registry, monitoring...) is "other".
GROUPS = {
    "decisions_decision": "decisions",
    "decisions_outcome": "outcomes",
    "explain_explanation": "explanations",
    "explain_explanationresult": "explanations",
    "explain_explanationconfig": "explanations",
    "explain_topreasons": "explanations",
    "reviews_reviewcase": "reviews",
    "reviews_caseevent": "reviews",
    "reviews_feedback": "reviews",
    "reviews_override": "reviews",
    "accounts_auditevent": "audit events",
    "accounts_logrecord": "log records",
    "decisions_seal": "seals",
}
GROUP_ORDER = [
    "decisions",
    "outcomes",
    "explanations",
    "reviews",
    "audit events",
    "log records",
    "seals",
    "other",
]


def prepare(fresh: bool = True):
    """A new, migrated database with the demo credit model: (user, version, fitted model)."""
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_STORAGE_DATABASE_URL", DEFAULT_DATABASE_URL)
    from bench import ingest

    ingest.configure_env()
    if fresh:
        drop_database(ingest.database_params())
    return ingest.prepare()


def drop_database(params: dict) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(params["dbname"])
            )
        )


def no_broker() -> None:
    """Explanations are computed in this process: ingestion sends nothing to a broker."""
    from explain import services

    services.send_pending = lambda pending: None


# --- filling the database through the product ------------------------------------------


def ingest(user, version, model, total: int, batch: int) -> list[dict]:
    """Record `total` demo decisions through record_decisions, `batch` per call.

    Returns the (request_id, predicted_at, true outcome) of each, for the outcomes.
    """
    from auditapp.accounts import roles
    from auditapp.decisions.services import record_decisions
    from auditapp.demo import credit
    from bench.ingest import MODEL, VERSION

    actor = roles.Actor(user=user)
    start = datetime.now(UTC) - PERIOD
    spacing = PERIOD / total
    truth = []
    began = time.perf_counter()
    for first in range(0, total, batch):
        count = min(batch, total - first)
        frame = credit.applicants(count, seed=first)
        items = list(
            credit.decision_payloads(
                model,
                frame,
                model_name=MODEL,
                version=VERSION,
                start=start + spacing * first,
                spacing=spacing,
            )
        )
        for n, item in enumerate(items, start=first):
            item["request_id"] = f"storage-{n:07d}"
        results = record_decisions(actor, {"decisions": items}, source="api")
        if sum(r["status"] == "created" for r in results) != count:
            sys.exit("ingestion did not create every decision")
        truth += [
            (item["request_id"], item["predicted_at"], outcome)
            for item, outcome in zip(items, frame["outcome"], strict=True)
        ]
        progress("recorded", first + count, total, began, count)
    return truth


def explain(version, method: str, decision_ids: list[int], size: int) -> float:
    """The workers' batch, in this process; seconds taken."""
    from explain.batches import run_batch

    began = time.perf_counter()
    for first in range(0, len(decision_ids), size):
        result = run_batch(version.pk, method, decision_ids[first : first + size])
        if result.get("failed"):
            sys.exit(f"{method}: {result['failed']} explanations failed")
        progress(f"{method} explained", first + size, len(decision_ids), began, size)
    return time.perf_counter() - began


def outcomes(user, truth: list[tuple[str, str, str]]) -> int:
    """The true outcome of the older half, observed five days after the decision."""
    from auditapp.accounts import roles
    from auditapp.decisions.outcomes import MAX_OUTCOMES, record_outcomes
    from bench.ingest import MODEL

    older = truth[: len(truth) // 2]
    items = [
        {
            "model": MODEL,
            "request_id": request_id,
            "outcome": outcome,
            "observed_at": (datetime.fromisoformat(at) + OUTCOME_DELAY).isoformat(),
        }
        for request_id, at, outcome in older
    ]
    created = 0
    for first in range(0, len(items), MAX_OUTCOMES):
        chunk = {"outcomes": items[first : first + MAX_OUTCOMES]}
        results = record_outcomes(roles.Actor(user=user), chunk, source="import")
        created += sum(r["status"] == "created" for r in results)
    return created


def progress(what: str, done: int, total: int, began: float, step: int) -> None:
    """A line at every tenth of the way."""
    done = min(done, total)
    if done * 10 // total > (done - step) * 10 // total:
        print(f"  {what} {done:,} / {total:,} ({time.perf_counter() - began:.0f} s)", flush=True)


# --- measuring -------------------------------------------------------------------------


@dataclass
class Table:
    name: str
    rows: int
    heap: int  # main fork, with the free space and visibility maps
    toast: int  # TOAST table and its index
    indexes: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.heap + self.toast + sum(self.indexes.values())

    def scaled(self, heap_ratio: float, index_ratio: float) -> Table:
        return Table(
            self.name,
            round(self.rows * index_ratio),
            round(self.heap * heap_ratio),
            round(self.toast * heap_ratio),
            {name: round(size * index_ratio) for name, size in self.indexes.items()},
        )


def sizes() -> dict[str, Table]:
    """Every table of the public schema: heap, TOAST and each index, in bytes.

    A partitioned table (decisions, results, audit events, log records by month) counts
    as one, under its own name: its partitions' sizes summed, each index with its
    partitions' indexes.
    """
    from django.db import connection

    tables: dict[str, Table] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.relname, c.reltuples::bigint, "
            "pg_table_size(c.oid) - coalesce(pg_total_relation_size(c.reltoastrelid), 0), "
            "coalesce(pg_total_relation_size(c.reltoastrelid), 0) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_class r ON r.oid = coalesce(pg_partition_root(c.oid), c.oid) "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
        )
        for name, rows, heap, toast in cursor.fetchall():
            table = tables.setdefault(name, Table(name, 0, 0, 0))
            table.rows += max(rows, 0)
            table.heap += heap
            table.toast += toast
        cursor.execute(
            "SELECT rt.relname, ri.relname, pg_relation_size(i.oid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "JOIN pg_class rt ON rt.oid = coalesce(pg_partition_root(t.oid), t.oid) "
            "JOIN pg_class ri ON ri.oid = coalesce(pg_partition_root(i.oid), i.oid) "
            "WHERE n.nspname = 'public' ORDER BY 1, 2"
        )
        for table_name, index, size in cursor.fetchall():
            indexes = tables[table_name].indexes
            indexes[index] = indexes.get(index, 0) + size
        for table in tables.values():  # reltuples is an estimate; the decision tables are exact
            if table.name in GROUPS:
                cursor.execute(f"SELECT count(*) FROM {table.name}")
                table.rows = cursor.fetchone()[0]
    return tables


def vacuum(full: bool) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM (FULL, ANALYZE)" if full else "VACUUM (ANALYZE)")


@dataclass
class Lime:
    """What is missing when LIME ran for a fraction: per table (heap ratio, index ratio)."""

    done: int
    total: int
    ratios: dict[str, tuple[float, float]] = field(default_factory=dict)


TUPLE_OVERHEAD = 28  # a heap tuple's header (24, aligned) and its line pointer (4)


def lime_ratios(done: int, total: int) -> Lime:
    """How the LIME-dependent tables would grow if every decision had its LIME result.

    Results: one more row per missing LIME (its average live bytes, with tuple
    overhead). Work rows: the missing LIME rows exist already (pending); once
    done they gain a result id and the agreement figures, the difference of the
    average live bytes of a done and a pending LIME row. Log records: one more
    per result. Seals: one more leaf per result (its id and hash). Heap and
    TOAST scale by live bytes (leaves for seals), indexes by rows.
    """
    from django.db import connection

    lime = Lime(done, total)
    missing = total - done
    if missing <= 0 or done == 0:
        return lime
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.method, count(*), sum(pg_column_size(r.*) + %s) "
            "FROM explain_explanationresult r JOIN explain_explanationconfig c "
            "ON c.id = r.config_id GROUP BY 1",
            [TUPLE_OVERHEAD],
        )
        results = {method: (rows, float(live)) for method, rows, live in cursor.fetchall()}
        rows = sum(count for count, _ in results.values())
        live = sum(size for _, size in results.values())
        lime_rows, lime_live = results["lime"]
        grown = live + missing * lime_live / lime_rows
        lime.ratios["explain_explanationresult"] = (grown / live, (rows + missing) / rows)
        cursor.execute(
            "SELECT status, avg(pg_column_size(e.*)) FROM explain_explanation e "
            "WHERE method = 'lime' GROUP BY 1"
        )
        average = {status: float(size) for status, size in cursor.fetchall()}
        cursor.execute(
            "SELECT sum(pg_column_size(e.*) + %s) FROM explain_explanation e", [TUPLE_OVERHEAD]
        )
        work_live = float(cursor.fetchone()[0])
        extra = missing * (average["done"] - average.get("pending", average["done"]))
        lime.ratios["explain_explanation"] = ((work_live + extra) / work_live, 1.0)
        cursor.execute("SELECT count(*) FROM accounts_logrecord")
        records = cursor.fetchone()[0]
        lime.ratios["accounts_logrecord"] = ((records + missing) / records,) * 2
        cursor.execute("SELECT max(tree_size) FROM decisions_seal")
        leaves = cursor.fetchone()[0]
        lime.ratios["decisions_seal"] = ((leaves + missing) / leaves, 1.0)
    return lime


def extrapolated(tables: dict[str, Table], lime: Lime) -> dict[str, Table]:
    return {
        name: table.scaled(*lime.ratios[name]) if name in lime.ratios else table
        for name, table in tables.items()
    }


# --- the raw baseline ------------------------------------------------------------------


def raw_arrays(n: int, features: int) -> dict[str, np.ndarray]:
    """The facts of n decisions as packed NumPy arrays (values drawn: only sizes matter)."""
    rng = np.random.default_rng(3)
    return {
        "id": np.arange(n, dtype=np.int64),
        "model_version_id": np.ones(n, dtype=np.int64),
        "predicted_at": np.zeros(n, dtype="datetime64[us]"),
        "recorded_at": np.zeros(n, dtype="datetime64[us]"),
        "score": rng.random(n),
        "prediction": np.zeros(n, dtype=np.bool_),
        "inputs": rng.random((n, features)),
        "attributions": rng.normal(size=(n, 2, features)),  # SHAP and LIME
    }


def raw_table(n: int, features: int) -> tuple[int, int]:
    """(bytes after VACUUM (ANALYZE), after VACUUM FULL) of a bare table holding n such rows.

    Random bytes for the arrays: rows this small are never compressed anyway.
    """
    from django.db import connection

    packed = f"decode(lpad('', {2 * 8 * features}, md5(g::text)), 'hex')"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
        cursor.execute(
            f"CREATE TABLE {RAW_TABLE} (id bigint NOT NULL, model_version_id bigint NOT NULL, "
            "predicted_at timestamptz NOT NULL, recorded_at timestamptz NOT NULL, "
            "score double precision, prediction boolean NOT NULL, "
            "inputs bytea NOT NULL, shap bytea NOT NULL, lime bytea NOT NULL)"
        )
        cursor.execute(
            f"INSERT INTO {RAW_TABLE} SELECT g, 1, now(), now(), random(), random() < 0.3, "
            f"{packed}, {packed}, {packed} FROM generate_series(1, %s) AS g",
            [n],
        )
        measured = []
        for full in (False, True):
            cursor.execute(f"VACUUM ({'FULL, ' if full else ''}ANALYZE) {RAW_TABLE}")
            cursor.execute("SELECT pg_total_relation_size(%s)", [RAW_TABLE])
            measured.append(cursor.fetchone()[0])
        cursor.execute(f"DROP TABLE {RAW_TABLE}")
    return measured[0], measured[1]


# --- printing ------------------------------------------------------------------------


def per(size: float, n: int) -> str:
    return f"{size / n:,.1f}"


def print_rows(header: tuple, rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(" | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        cells = [str(row[0]).ljust(widths[0])]
        cells += [str(c).rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print(" | ".join(cells))


def table_rows(vacuumed: dict[str, Table], full: dict[str, Table], n: int) -> list[tuple]:
    """One line per table of the decision groups (heap, TOAST, each index), bytes/decision."""
    rows = []
    for name in sorted(vacuumed, key=lambda t: (GROUP_ORDER.index(group_of(t)), t)):
        if group_of(name) == "other":
            continue
        a, b = vacuumed[name], full[name]
        rows.append((name, f"{a.rows:,}", per(a.total, n), per(b.total, n)))
        rows.append(("  heap", "", per(a.heap, n), per(b.heap, n)))
        if a.toast or b.toast:
            rows.append(("  TOAST", "", per(a.toast, n), per(b.toast, n)))
        for index in a.indexes:
            rows.append((f"  {index}", "", per(a.indexes[index], n), per(b.indexes[index], n)))
    return rows


def group_of(table: str) -> str:
    return GROUPS.get(table, "other")


def grouped(tables: dict[str, Table]) -> dict[str, int]:
    totals = dict.fromkeys(GROUP_ORDER, 0)
    for name, table in tables.items():
        totals[group_of(name)] += table.total
    return totals


def verdict(total: float) -> str:
    return f"MET ({total:,.0f} B)" if total <= TARGET_BYTES else f"NOT MET ({total:,.0f} B)"


# --- main ------------------------------------------------------------------------------


def run(n: int, lime_fraction: float, batch: int) -> None:
    started = time.perf_counter()
    user, version, model = prepare()
    no_broker()
    from django.conf import settings
    from django.db import connection

    from auditapp.decisions.models import Decision
    from auditapp.decisions.sealing import seal_new_records
    from explain.publishing import LIME_BATCH

    features = len(version.parsed_schema.names)
    print(f"recording {n:,} decisions through record_decisions, {batch:,} per call")
    truth = ingest(user, version, model, n, batch)
    ids = list(Decision.objects.order_by("id").values_list("id", flat=True))
    shap_s = explain(version, "shap", ids, settings.ATTEST_EXPLAIN_BATCH_SIZE)
    lime_ids = ids[:: max(round(1 / lime_fraction), 1)] if lime_fraction < 1 else ids
    lime_s = explain(version, "lime", lime_ids, LIME_BATCH)
    print(f"outcomes: {outcomes(user, truth):,} recorded")
    seals = seal_new_records()
    print(f"sealed: {len(seals)} seal(s), tree size {seals[-1].tree_size:,}")
    lime = lime_ratios(len(lime_ids), n)
    vacuum(full=False)
    vacuumed = extrapolated(sizes(), lime)
    vacuum(full=True)
    full = extrapolated(sizes(), lime)
    raw_vacuumed, raw_full = raw_table(n, features)
    arrays = raw_arrays(n, features)
    nbytes = sum(a.nbytes for a in arrays.values())
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM reviews_reviewcase")
        cases = cursor.fetchone()[0]

    print()
    print(
        f"Attest storage benchmark — N = {n:,} decisions of the demo credit model "
        f"({features} features), PostgreSQL {pg_version}, {os.cpu_count()} CPUs"
    )
    print(
        f"SHAP for all {n:,} ({shap_s:.0f} s, {n / shap_s:,.0f}/s); LIME for {len(lime_ids):,} "
        f"({lime_s:.0f} s, {lime_s / len(lime_ids) * 1000:.0f} ms each); outcomes for half; "
        f"{cases:,} review cases; {len(seals)} seal(s)"
    )
    if lime.ratios:
        scaled = ", ".join(
            f"{name} heap x {heap:.2f}, indexes x {index:.2f}"
            for name, (heap, index) in lime.ratios.items()
        )
        print(
            f"EXTRAPOLATED: LIME ran for {len(lime_ids):,} of {n:,} decisions; these tables are "
            f"shown as if it had run for all: {scaled}. Review cases from SHAP-LIME "
            "disagreement are those of the LIME fraction only."
        )
    print()
    print_rows(
        ("table / part", "rows", "B/decision, VACUUM (ANALYZE)", "B/decision, VACUUM FULL"),
        table_rows(vacuumed, full, n),
    )
    print()
    groups_a, groups_b = grouped(vacuumed), grouped(full)
    total_a = sum(size for group, size in groups_a.items() if group != "other")
    total_b = sum(size for group, size in groups_b.items() if group != "other")
    rows = [
        (
            group,
            per(groups_a[group], n),
            f"{groups_a[group] / total_a:.0%}",
            per(groups_b[group], n),
            f"{groups_b[group] / total_b:.0%}",
        )
        for group in GROUP_ORDER
        if group != "other"
    ]
    rows.append(("TOTAL per decision", per(total_a, n), "", per(total_b, n), ""))
    rows.append(
        (
            "other tables (fixed: users, registry, ...; not in the total)",
            per(groups_a["other"], n),
            "",
            per(groups_b["other"], n),
            "",
        )
    )
    rows.append(
        (
            f"raw: bare PostgreSQL table, {n:,} rows",
            per(raw_vacuumed, n),
            "",
            per(raw_full, n),
            "",
        )
    )
    rows.append(("raw: NumPy .nbytes", per(nbytes, n), "", per(nbytes, n), ""))
    ratio_a, ratio_b = total_a / raw_vacuumed, total_b / raw_full
    rows.append(("Attest / raw table", f"{ratio_a:.1f}x", "", f"{ratio_b:.1f}x", ""))
    print_rows(("group", "B/decision, VACUUM (ANALYZE)", "share", "VACUUM FULL", "share"), rows)
    print()
    print(
        "raw baseline per decision: id, version id, 2 timestamps, score, prediction, inputs "
        f"float64 x {features}, SHAP and LIME attributions float64 x {features} each"
    )
    largest = sorted(
        (t for t in full.values() if group_of(t.name) != "other"), key=lambda t: -t.total
    )[:3]
    print(
        "largest tables (VACUUM FULL): "
        + ", ".join(f"{t.name} {t.total / n:,.0f} B ({t.total / total_b:.0%})" for t in largest)
    )
    print(
        f"target <= {TARGET_BYTES:,} B per decision in all: as written {verdict(total_a / n)}; "
        f"compacted {verdict(total_b / n)}"
    )
    print(f"{time.perf_counter() - started:.0f} s in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000, help="N (the issue: 1,000,000)")
    parser.add_argument(
        "--lime-fraction",
        type=float,
        default=0.05,
        help="LIME for this share of the decisions, extrapolated to all (1: no extrapolation)",
    )
    parser.add_argument("--batch", type=int, default=1_000, help="decisions per ingestion call")
    args = parser.parse_args()
    if not 0 < args.lime_fraction <= 1:
        parser.error("--lime-fraction must be in (0, 1]")
    run(args.decisions, args.lime_fraction, args.batch)


if __name__ == "__main__":
    main()
