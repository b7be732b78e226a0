"""Explanation benchmark: Attest's asynchronous SHAP and LIME beside the raw libraries.

Run with `.venv/bin/python bench/explain.py`. Not a test: it prints figures
and checks them against the targets of the explanation issue.

What it does, against PostgreSQL and Redis (nothing else is touched):

1. DATABASE_URL (default postgres://postgres@127.0.0.1:5432/attest_bench_explain)
   is created if missing and migrated; CELERY_BROKER_URL defaults to Redis db 12,
   whose queues are purged at the start and at the end. Files (artifacts,
   background samples) go to var/bench-explain/ unless ATTEST_VAR_DIR is set.
2. Synthetic data (make_classification, 30 numeric features) and five model
   versions, registered once per database through register_model_version with
   a 30-feature schema and a 200-row background CSV, every artifact a skops file:
     bench-gbc30       GradientBoostingClassifier (100 trees, depth 3), LIME on_demand
     bench-lgbm200-skops  LGBMClassifier, 200 trees, max_depth 6, n_jobs=1, LIME on_demand
     bench-xgb200      XGBClassifier, 200 trees, max_depth 6, n_jobs=1 (classes 0/1),
                       LIME on_demand
     bench-gbc30-lime  the same GBC artifact, LIME "all"
     bench-mlp30       StandardScaler + MLPClassifier pipeline (model-agnostic SHAP:
                       PermutationExplainer), LIME on_demand
   Counterfactuals are on demand for all five (they have their own queue, workers and
   bench, bench/counterfactual_flow.py).
   The raw baselines use the models loaded back from the registered artifacts and
   the background parsed from the registered CSV, so both sides use the same bytes.
3. Real Celery worker processes: one `celery -A auditapp worker --concurrency 2
   --queues explain,explain-lime,explain-priority,maintenance` subprocess (an
   explanation worker as the README deploys it; prefork: 2 pool processes that do
   the work, plus the parent that only talks to the broker). The raw baselines run
   in a multiprocessing Pool of the same 2 processes. Every process is limited to
   one BLAS/OpenMP thread.
4. Decisions are ingested over HTTP (POST /api/v1/decisions, the app served by a
   subprocess, as in bench/ingest.py); the bench then polls the database until
   every explanation of the run is stored. TreeSHAP throughput is measured twice,
   on fresh decisions each time:
   a. the explanation pipeline (the issue's target): the worker stops consuming
      the `explain` queue (Celery's cancel_consumer), the decisions are POSTed,
      the worker resumes (add_consumer); rows / (newest Explanation.updated_at -
      resume). Those POSTs, with no worker competing, also give the ingestion
      rate alone.
   b. the full path: the same with the worker running while the decisions are
      POSTed; rows / (newest Explanation.updated_at - first POST). Bounded by
      ingestion, which is printed beside it.
5. Before each figure both sides are warmed up (the workers' per-process
   explainer cache holds the version; the raw pool has built its explainers), so
   the figures are steady-state ones (the first permutation SHAP call of a
   process also JIT-compiles shap's numba code, several seconds).
6. Explanations left pending with no task in the broker or the worker (a SHAP and
   a LIME task of the same decisions claiming at the same moment can cause it)
   are re-sent after 0.5 s of an idle broker, and counted in the report.
7. With the workers stopped, one batch's steps are timed in-process (claim,
   engine, store, and their SQL), the evidence for where the time goes; beside
   them the storage floor: reading the batch's inputs and one COPY of its
   results into a copy of the explanations table, the least that any design
   storing one explanation per decision pays (so the best ratio it could reach).
8. Workers and server are stopped, the token revoked, the queues purged.
   BENCH_KEEP_WORKER_LOG=1 keeps the worker's log file and prints its path.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is called explain.py and Python puts its folder first on sys.path:
# it would shadow the `explain` app. The project root goes there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import ingest  # noqa: E402 - needs the sys.path fix above

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/attest_bench_explain"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/12"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

PROCESSES = 2  # Celery pool processes, and raw Pool processes
EXPLANATION_QUEUES = "explain,explain-lime,explain-priority,maintenance"
N_FEATURES = 30
TRAIN_ROWS = 4000
BACKGROUND_ROWS = 200
POOL_ROWS = 70_000  # rows the decisions of a run are drawn from

GBC_ROWS = 12_000  # figure 1 (twice: the pipeline alone, then from the first POST)
LGBM_ROWS = 4_500  # figure 2 (likewise)
XGB_ROWS = 3_000  # figure 3 (likewise)
TREE_ROUNDS = 3  # each TreeSHAP run in rounds alternating raw and Attest (load drifts)
LIME_ROWS = 500  # figure 4: a multiple of PROCESSES x the LIME batch size (25 or 250)
PERM_ROWS = 80  # figure 5: eight 10-row tasks, in 4 rounds
LATENCY_RATE = 100  # figure 5: decisions per second ...
LATENCY_TICK = 0.1  # ... sent as one POST every 100 ms ...
LATENCY_SECONDS = 25  # ... for this long
POST_SIZE = 1_000  # decisions per POST for the throughput figures

TARGET_TREE_SHARE = 0.8  # TreeSHAP decisions/s >= 80% of raw
TARGET_PER_ROW_TIMES = 1.1  # LIME and permutation SHAP time per decision <= 1.1x raw
TARGET_P95_S = 2.0  # ingestion -> stored SHAP, p95, at 100 decisions/s

POLL_S = 0.1  # interval between database polls while waiting for explanations
ORPHAN_IDLE_S = 0.5  # broker idle this long with explanations pending: they have no task
CLASSES = ["no", "yes"]
XGB_CLASSES = [0, 1]  # XGBoost learns integer classes: 1 is "yes"
NAMES = [f"x{i:02d}" for i in range(N_FEATURES)]


def schema_for(classes: list) -> dict:
    return {
        "features": [{"name": name, "type": "numeric"} for name in NAMES],
        "target": {"type": "classification", "classes": classes, "positive_class": classes[1]},
    }


SCHEMA = schema_for(CLASSES)
DONE_LINE = re.compile(
    r"/(?P<process>[\w-]+)\].*explain\.batch\.done model_version=(?P<version>\d+) "
    r"method=(?P<method>\w+) n=(?P<n>\d+) failed=(?P<failed>\d+) ms=(?P<ms>\d+)"
)
TASK_LINE = re.compile(r"Task explain\.batch\[[^\]]+\] succeeded in (?P<s>[\d.]+)s")
RECEIVED_LINE = re.compile(
    r"\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
    r"Task explain\.batch\[[^\]]+\] received"
)


def configure_env() -> None:
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    os.environ.setdefault("ATTEST_VAR_DIR", str(ROOT / "var" / "bench-explain"))
    # One thread per process on both sides, so that "2 processes" means 2 cores'
    # worth of work (LightGBM and NumPy's BLAS would otherwise start their own).
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    ingest.configure_env()  # settings module, DEBUG=false, LOG_LEVEL=WARNING


# --- data and models -----------------------------------------------------------------


def dataset():
    """(training frame, labels, background frame, decision rows): the same every run."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    total = TRAIN_ROWS + BACKGROUND_ROWS + POOL_ROWS
    x, y = make_classification(
        n_samples=total, n_features=N_FEATURES, n_informative=12, n_redundant=6, random_state=0
    )
    x = np.round(x, 6)  # what a client would send; exact through JSON and CSV
    frame = pd.DataFrame(x, columns=NAMES)
    labels = np.asarray(CLASSES)[y]
    background = frame.iloc[TRAIN_ROWS : TRAIN_ROWS + BACKGROUND_ROWS]
    pool = x[TRAIN_ROWS + BACKGROUND_ROWS :]
    return frame.iloc[:TRAIN_ROWS], labels[:TRAIN_ROWS], background, pool


def train(kind: str, frame, labels):
    if kind == "gbc":
        from sklearn.ensemble import GradientBoostingClassifier

        return GradientBoostingClassifier(random_state=0).fit(frame, labels)
    if kind == "lgbm":
        import lightgbm

        model = lightgbm.LGBMClassifier(
            n_estimators=200, max_depth=6, num_leaves=63, n_jobs=1, verbose=-1, random_state=0
        )
        return model.fit(frame, labels)
    if kind == "xgb":
        import xgboost

        model = xgboost.XGBClassifier(
            n_estimators=200, max_depth=6, n_jobs=1, random_state=0, tree_method="hist"
        )
        return model.fit(frame, (labels == CLASSES[1]).astype(int))
    if kind == "mlp":
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        model = Pipeline(
            [
                ("scale", StandardScaler()),
                ("mlp", MLPClassifier((32,), max_iter=300, random_state=0)),
            ]
        )
        return model.fit(frame, labels)
    raise ValueError(kind)


@dataclass
class Bench:
    """One registered model version and what both sides need to explain its decisions."""

    name: str
    kind: str  # gbc / lgbm / xgb / mlp
    lime: str  # the version's explain config: on_demand / all
    artifact_format: str = "skops"
    classes: list = field(default_factory=lambda: list(CLASSES))
    version: object = None
    model: object = None
    background: object = None  # numpy array, parsed from the registered CSV
    positive: int = 1
    done_seen: set = field(default_factory=set)


BENCHES = {
    "gbc": Bench("bench-gbc30", "gbc", "on_demand"),
    # LightGBM's skops files hold a collections.OrderedDict, which the registry trusts.
    "lgbm": Bench("bench-lgbm200-skops", "lgbm", "on_demand"),
    "xgb": Bench("bench-xgb200", "xgb", "on_demand", classes=XGB_CLASSES),
    "lime": Bench("bench-gbc30-lime", "gbc", "all"),
    "mlp": Bench("bench-mlp30", "mlp", "on_demand"),
}


def artifact_bytes(model, artifact_format: str) -> bytes:
    if artifact_format == "joblib":
        import joblib

        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        return buffer.getvalue()
    import skops.io

    return skops.io.dumps(model)


def register_all(user, frame, labels, background_frame) -> None:
    """Register the versions missing from this database; load every model back."""
    from django.db import transaction

    from auditapp.accounts import roles
    from auditapp.registry import services as registry
    from auditapp.registry.models import ModelVersion, RegisteredModel

    actor = roles.Actor(user=user)
    csv = io.StringIO()
    background_frame.to_csv(csv, index=False)
    trained: dict[str, object] = {}
    for bench in BENCHES.values():
        version = ModelVersion.objects.filter(
            registered_model__name=bench.name, version="1"
        ).first()
        if version is None:
            if bench.kind not in trained:
                began = time.perf_counter()
                trained[bench.kind] = train(bench.kind, frame, labels)
                print(f"trained {bench.kind} in {time.perf_counter() - began:.1f} s")
            upload = registry.VersionUpload(
                name=bench.name,
                version="1",
                artifact=artifact_bytes(trained[bench.kind], bench.artifact_format),
                artifact_format=bench.artifact_format,
                schema=schema_for(bench.classes),
                background=csv.getvalue().encode(),
                card={"description": f"bench/explain.py: {bench.kind}, {N_FEATURES} features"},
                # Counterfactuals on demand, as LIME: this bench measures explanations
                # (bench/counterfactual_flow.py measures the counterfactuals' own workers).
                explain={"lime": bench.lime, "counterfactuals": "on_demand"},
            )
            with transaction.atomic():
                version = registry.register_model_version(actor, upload)
                version = registry.change_stage(actor, version, ModelVersion.PRODUCTION)
            print(
                f"registered {bench.name} version 1 (lime {bench.lime}, counterfactuals on_demand)"
            )
        elif not RegisteredModel.objects.visible_to(actor).filter(name=bench.name).exists():
            registry.assign_models(user, [bench.name])
        bench.version = version
        bench.model = registry.load_model(version)
        schema = version.parsed_schema
        with version.background.open("rb") as handle:
            rows = registry.parse_background(handle.read(), schema)
        bench.background = schema.frame(rows).to_numpy(dtype=float)
        bench.positive = [str(c) for c in bench.model.classes_].index(str(bench.classes[1]))


class Decisions:
    """Decision payloads for one version, with request_ids unique to this run."""

    def __init__(self, pool, run_tag: str) -> None:
        self.pool = pool
        self.run_tag = run_tag
        self.next = 0

    def take(self, bench: Bench, n: int) -> tuple[list[dict], object]:
        """(payload items, the same rows as an array)."""
        import pandas as pd

        if self.next + n > len(self.pool):
            raise RuntimeError("the row pool is too small; raise POOL_ROWS")
        rows = self.pool[self.next : self.next + n]
        start = self.next
        self.next += n
        scores = bench.model.predict_proba(pd.DataFrame(rows, columns=NAMES))[:, bench.positive]
        now = datetime.now(UTC).isoformat()
        items = [
            {
                "model": bench.name,
                "version": "1",
                "request_id": f"bx-{self.run_tag}-{start + i:06d}",
                "inputs": dict(zip(NAMES, row.tolist(), strict=True)),
                "prediction": bench.classes[1] if score >= 0.5 else bench.classes[0],
                "score": round(float(score), 6),
                "predicted_at": now,
            }
            for i, (row, score) in enumerate(zip(rows, scores, strict=True))
        ]
        return items, rows


# --- the raw side: the libraries alone, in a Pool of the same number of processes -------

_RAW: dict = {}


def _raw_init(specs: dict, barrier) -> None:
    """Build every raw explainer once per process, as a worker's cache would."""
    import warnings

    import numpy as np
    import pandas as pd
    import shap
    from lime.lime_tabular import LimeTabularExplainer

    warnings.filterwarnings("ignore", message="LightGBM binary classifier")
    for key, (kind, model, background, positive) in specs.items():
        if kind == "tree":
            _RAW[key] = shap.TreeExplainer(model)
        elif kind == "lime":
            _RAW[key] = (
                LimeTabularExplainer(
                    background,
                    mode="classification",
                    feature_names=NAMES,
                    class_names=CLASSES,
                    discretize_continuous=True,
                    random_state=0,
                ),
                lambda a, m=model: m.predict_proba(pd.DataFrame(a, columns=NAMES)),
                positive,
            )
        elif kind == "perm":
            sample = background
            if len(sample) > 100:
                sample = shap.utils.sample(sample, 100, random_state=0)
            masker = shap.maskers.Independent(sample, max_samples=len(sample))

            def predict(a, m=model, p=positive):
                return m.predict_proba(pd.DataFrame(a, columns=NAMES))[:, p]

            _RAW[key] = shap.PermutationExplainer(predict, masker)
    np.random.seed(0)
    barrier.wait()


def _raw_tree(key: str, rows) -> int:
    _RAW[key].shap_values(rows)
    return len(rows)


def _raw_tree_batches(key: str, rows, size: int) -> list[float]:
    """Seconds of shap_values per batch of `size` rows, one batch after the other."""
    timings = []
    for start in range(0, len(rows), size):
        began = time.perf_counter()
        _RAW[key].shap_values(rows[start : start + size])
        timings.append(time.perf_counter() - began)
    return timings


def _raw_lime(key: str, rows) -> int:
    explainer, predict, positive = _RAW[key]
    for row in rows:
        explainer.explain_instance(
            row, predict, labels=(positive,), num_features=len(NAMES), num_samples=5000
        )
    return len(rows)


def _raw_perm(key: str, rows, seeds, max_evals: int) -> int:
    import numpy as np

    explainer = _RAW[key]
    for row, seed in zip(rows, seeds, strict=True):
        np.random.seed(seed)
        explainer(row.reshape(1, -1), max_evals=max_evals, silent=True)
    return len(rows)


class RawPool:
    """A spawn Pool of PROCESSES processes, every explainer built before the first timing."""

    def __init__(self, specs: dict) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(PROCESSES + 1)
        self.pool = context.Pool(PROCESSES, initializer=_raw_init, initargs=(specs, barrier))
        began = time.perf_counter()
        barrier.wait(timeout=300)
        self.startup = time.perf_counter() - began

    def run(self, function, calls: list[tuple]) -> float:
        """Wall seconds for all calls, spread over the processes one call at a time."""
        began = time.perf_counter()
        self.pool.starmap(function, calls, chunksize=1)
        return time.perf_counter() - began

    def call(self, function, *args):
        return self.pool.apply(function, args)

    def measured(self, function, calls: list[tuple]) -> tuple[float, float]:
        """(wall seconds, CPU seconds of the pool processes) for all calls."""
        pids = [process.pid for process in self.pool._pool]
        before = cpu_seconds(pids)
        wall = self.run(function, calls)
        return wall, cpu_seconds(pids) - before

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


def chunks(rows, size: int) -> list:
    return [rows[start : start + size] for start in range(0, len(rows), size)]


# --- CPU time of processes (Linux /proc): what the work cost, whatever else runs here ---------


def cpu_by_process(pids) -> dict[int, float]:
    """utime + stime of each of these processes that still runs, in seconds."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def cpu_seconds(pids) -> float:
    return sum(cpu_by_process(pids).values())


def cpu_spent(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per group between two Attest.cpu() snapshots (new processes count whole)."""
    return {
        group: sum(t - before[group].get(pid, 0.0) for pid, t in after[group].items())
        for group in after
    }


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def backend_pids() -> list[int]:
    """The PostgreSQL backends of this database other than this process's own."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


# --- the Attest side: Celery workers, HTTP ingestion, the database -----------------------


def refuse_other_workers() -> None:
    """Stop if some worker already consumes the bench's broker: it would take tasks unseen.

    (A worker left behind by an interrupted run explains part of the decisions
    in processes the bench neither counts nor warms up, and the figures are wrong.)
    """
    from auditapp.celery import app

    replies = app.control.ping(timeout=1.0)
    if replies:
        names = ", ".join(sorted(name for reply in replies for name in reply))
        raise SystemExit(
            f"bench/explain.py: worker(s) {names} already consume "
            f"{os.environ['CELERY_BROKER_URL']}; stop them first "
            "(e.g. pkill -f 'celery -A auditapp worker')."
        )


class Workers:
    """`celery -A auditapp worker --concurrency N` in a subprocess, logging to a file."""

    def __init__(self, processes: int) -> None:
        self.nodename = f"bench-explain-{os.getpid()}@bench"
        self.log_path = Path(tempfile.mkstemp(prefix="bench-explain-worker-", suffix=".log")[1])
        self.log = self.log_path.open("wb")
        # Celery's line per finished task (where the pool's time went) is at WARNING
        # unless asked for (settings: CELERY_TASK_LOG_LEVEL).
        env = {**os.environ, "LOG_LEVEL": "INFO", "CELERY_TASK_LOG_LEVEL": "INFO"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "auditapp",
                "worker",
                "--concurrency",
                str(processes),
                "--loglevel",
                "INFO",
                "--hostname",
                self.nodename,
                "--queues",  # an explanation worker, as deployed (README: Scaling workers)
                EXPLANATION_QUEUES,
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.offset = 0

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            self.check_alive()
            if " ready." in self.text():
                return time.monotonic() - began
            time.sleep(POLL_S)  # poll interval, not a fixed wait
        raise RuntimeError(f"the worker was not ready within {timeout:.0f} s:\n{self.tail()}")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited ({self.process.returncode}):\n{self.tail()}")

    def tail(self, size: int = 4000) -> str:
        return self.text()[-size:]

    def done_lines(self, since: int = 0, until: int | None = None) -> list[dict]:
        """The explain.batch.done lines logged between two characters of the log."""
        found = []
        for match in DONE_LINE.finditer(self.text()[since:until]):
            found.append(
                {
                    "process": match["process"],
                    "version": int(match["version"]),
                    "method": match["method"],
                    "n": int(match["n"]),
                    "failed": int(match["failed"]),
                    "ms": int(match["ms"]),
                }
            )
        return found

    def task_seconds(self, since: int = 0, until: int | None = None) -> float:
        """Seconds the pool processes spent in explain.batch tasks logged in that range."""
        return sum(float(m["s"]) for m in TASK_LINE.finditer(self.text()[since:until]))

    def evidence(self, figures: dict, until: int | None) -> None:
        """Add what the worker's log says about a figure's tasks (call once the log is complete)."""
        until = figures.get("log_end", until)
        lines = [
            line
            for line in self.done_lines(figures["log_mark"], until)
            if line["version"] == figures["version"] and line["method"] == figures["method"]
        ]
        figures.update(
            batches=len(lines),
            logged_rows=sum(line["n"] for line in lines),
            engine_s=sum(line["ms"] for line in lines) / 1000,
            processes=sorted({line["process"] for line in lines}),
            task_s=self.task_seconds(figures["log_mark"], until),
        )

    def mark(self) -> int:
        return len(self.text())

    def first_received(self, since: int) -> datetime | None:
        """When the worker received its first explain.batch task after this log mark."""
        match = RECEIVED_LINE.search(self.text()[since:])
        if match is None:
            return None
        # The worker logs in this machine's local time; astimezone() reads it so.
        return datetime.fromisoformat(match["at"].replace(",", ".")).astimezone(UTC)

    def pids(self) -> list[int]:
        return [self.process.pid, *children(self.process.pid)]

    def pause(self, queue: str = "explain") -> None:
        """Stop taking tasks from the queue (Celery's cancel_consumer); messages wait in Redis."""
        self._control("cancel_consumer", queue)

    def resume(self, queue: str = "explain") -> datetime:
        """Take tasks from the queue again; the moment just before, in UTC."""
        started = datetime.now(UTC)
        self._control("add_consumer", queue)
        return started

    def _control(self, command: str, queue: str) -> None:
        from auditapp.celery import app

        replies = getattr(app.control, command)(
            queue, destination=[self.nodename], reply=True, timeout=10
        )
        if not replies:
            raise RuntimeError(f"the worker did not answer {command}({queue!r}):\n{self.tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # The pool processes are in the session this bench created.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@dataclass
class Run:
    """Decisions ingested for one figure and when their explanations were stored."""

    bench: Bench
    method: str
    ids: list[int]
    started: datetime
    ingest_s: float
    log_mark: int


def broker_idle() -> bool:
    """No task message waiting in a queue, and none delivered but not yet acknowledged.

    Tasks are acknowledged late (after they ran), so a running task keeps its
    message in kombu's "unacked" hash until it is done.
    """
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        waiting = sum(
            client.llen(key)
            for name in settings.CELERY_TASK_QUEUES
            for key in client.scan_iter(f"{name.name}*")
            if client.type(key) == b"list"
        )
        return waiting == 0 and client.hlen("unacked") == 0
    finally:
        client.close()


class Attest:
    def __init__(
        self, client: ingest.Client, workers: Workers, decisions: Decisions, server_pid: int
    ) -> None:
        self.client = client
        self.workers = workers
        self.decisions = decisions
        self.server_pid = server_pid
        self.orphans: list[tuple[str, str, int]] = []  # (version, method, explanations re-sent)

    def cpu(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far of the worker (parent and pool), the app server, and the
        PostgreSQL backends serving them (Redis, shared with other users, is left out)."""
        return {
            "workers": cpu_by_process(self.workers.pids()),
            "server": cpu_by_process([self.server_pid]),
            "postgres": cpu_by_process(backend_pids()),
        }

    def post(self, items: list[dict]) -> list[int]:
        _, _, data = self.client.post(ingest.body_of(items))
        results = json.loads(data)["results"]
        if any(r["status"] != "created" for r in results):
            raise RuntimeError(f"not every decision was created: {results[:3]}")
        return [r["id"] for r in results]

    def ingest(self, bench: Bench, method: str, items: list[dict], post_size: int) -> Run:
        mark = self.workers.mark()
        started = datetime.now(UTC)
        began = time.perf_counter()
        ids = []
        for start in range(0, len(items), post_size):
            ids += self.post(items[start : start + post_size])
        return Run(bench, method, ids, started, time.perf_counter() - began, mark)

    def wait(self, run: Run, timeout: float = 600.0, since: datetime | None = None) -> dict:
        """Poll until every explanation of the run is stored; its figures.

        elapsed runs from `since` (the workers resumed) or else from the first POST.
        """
        from django.db.models import Count, Max

        from explain.models import Explanation

        finished = (Explanation.DONE, Explanation.FAILED)
        rows = Explanation.objects.filter(
            method=run.method, decision_id__gte=min(run.ids), decision_id__lte=max(run.ids)
        )
        began = time.monotonic()
        idle_since = None
        while True:
            counts = dict(rows.values_list("status").annotate(n=Count("id")).order_by())
            if sum(counts.get(s, 0) for s in finished) >= len(run.ids):
                break
            self.workers.check_alive()
            if counts.get(Explanation.PENDING) and broker_idle():
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= ORPHAN_IDLE_S:
                    self.resend_orphans(run, rows.filter(status=Explanation.PENDING))
                    idle_since = None
            else:
                idle_since = None
            if time.monotonic() - began > timeout:
                raise RuntimeError(
                    f"{run.bench.name}/{run.method}: not done after {timeout:.0f} s ({counts})\n"
                    f"{self.workers.tail()}"
                )
            time.sleep(POLL_S)  # poll interval, not a fixed wait
        last = rows.aggregate(last=Max("updated_at"))["last"]
        failed = counts.get(Explanation.FAILED, 0)
        if failed:
            errors = list(
                rows.filter(status=Explanation.FAILED).values_list("error", flat=True)[:3]
            )
            print(f"  ! {failed} {run.method} explanation(s) failed: {errors}")
        return {
            "elapsed": (last - (since or run.started)).total_seconds(),
            "failed": failed,
            "ingest_s": run.ingest_s,
            "log_mark": run.log_mark,
            "version": run.bench.version.pk,
            "method": run.method,
        }

    def resend_orphans(self, run: Run, pending) -> None:
        """Explanations left pending with no task anywhere: send them again, say so.

        It happens when a SHAP and a LIME task of the same decisions claim their
        rows at the same moment (see the report); the app's sweeper would re-send
        them after its grace period (explain/leases.py: PENDING_GRACE), which a
        benchmark cannot wait for.
        """
        from explain import publishing

        ids = sorted(set(pending.values_list("decision_id", flat=True)) & set(run.ids))
        if not ids:
            return
        publishing.enqueue_batches({(run.bench.version.pk, run.method): ids})
        self.orphans.append((run.bench.name, run.method, len(ids)))
        print(
            f"  ! {len(ids)} {run.bench.name}/{run.method} explanation(s) left pending with no "
            "task in the broker or the worker: re-sent",
            flush=True,
        )

    def warm(self, bench: Bench, method: str, requests: int, size: int) -> None:
        """Ingest small warm-up requests until every pool process has built the explainer."""
        for _ in range(8):
            mark = self.workers.mark()
            runs = [
                self.ingest(bench, method, self.decisions.take(bench, size)[0], size)
                for _ in range(requests)
            ]
            for run in runs:
                self.wait(run)
            bench.done_seen |= {
                line["process"]
                for line in self.workers.done_lines(mark)
                if line["version"] == bench.version.pk and line["method"] == method
            }
            if len(bench.done_seen) >= PROCESSES:
                return
        print(f"  ! warm-up of {bench.name}/{method} reached only {sorted(bench.done_seen)}")


def analyze_tables() -> None:
    """Fresh planner statistics for the tables the tasks query.

    This server may run with autovacuum off (say so in the report); with stale
    statistics the claim's join picks a hash join over every decision of the
    version, hundreds of ms a batch that a production server would not pay.
    """
    from django.db import connection

    from auditapp.decisions.models import Decision
    from explain.models import Explanation

    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Decision._meta.db_table}, {Explanation._meta.db_table}")


def purge_broker() -> int:
    """Drop the task messages on the broker; on the bench's own Redis db, kombu's keys too."""
    return ingest.purge_broker(DEFAULT_BROKER_URL)


# --- figures ------------------------------------------------------------------------------


def tree_figure(attest: Attest, raw: RawPool, key: str, rows_count: int, batch: int) -> dict:
    """Two figures on fresh decisions, each beside raw shap_values on the same rows.

    - the explanation pipeline: the decisions are recorded while the workers take
      nothing from the `explain` queue (Celery's cancel_consumer), then the workers
      resume: rows / (newest Explanation.updated_at - resume). The target's figure.
    - the full path: the workers running while the decisions are POSTed:
      rows / (newest Explanation.updated_at - first POST), bounded by ingestion.
    Each in TREE_ROUNDS rounds that alternate raw and Attest, so both see the same
    drift in this shared machine's load; CPU seconds are counted on both sides too.
    The pipeline's POSTs, with no worker competing, give the ingestion rate alone.
    """
    bench = BENCHES[key]
    attest.warm(bench, "shap", PROCESSES, batch)
    size = rows_count // TREE_ROUNDS // (batch * PROCESSES) * (batch * PROCESSES) or batch
    figures: dict[str, dict] = {}
    for name in ("pipeline", "full"):
        total = {"elapsed": 0.0, "ingest_s": 0.0, "raw_s": 0.0, "raw_cpu": 0.0, "failed": 0}
        spent = {"workers": 0.0, "server": 0.0, "postgres": 0.0}
        for round_number in range(TREE_ROUNDS):
            items, rows = attest.decisions.take(bench, size)
            if round_number == 0:  # the pool's first call on these rows, untimed
                raw.run(_raw_tree, [(key, c) for c in chunks(rows[: batch * PROCESSES], batch)])
            raw_s, raw_cpu = raw.measured(_raw_tree, [(key, c) for c in chunks(rows, batch)])
            if name == "pipeline":
                attest.workers.pause()
                run = attest.ingest(bench, "shap", items, POST_SIZE)
                mark = attest.workers.mark()
                before = attest.cpu()
                resumed = attest.workers.resume()
                result = attest.wait(run, since=resumed)
                # A resumed consumer waits for kombu's next Redis poll (up to a second)
                # before it takes a task: a cost of pausing it, not of the pipeline.
                # The pipeline's clock starts when the worker receives the first task.
                received = attest.workers.first_received(mark) or resumed
                restart = max(0.0, (received - resumed).total_seconds())
                result["elapsed"] -= restart
                total["restart_s"] = total.get("restart_s", 0.0) + restart
            else:
                if round_number == 0:
                    figures["pipeline"]["log_end"] = attest.workers.mark()
                before = attest.cpu()
                result = attest.wait(attest.ingest(bench, "shap", items, POST_SIZE))
            for group, seconds in cpu_spent(before, attest.cpu()).items():
                spent[group] += seconds
            for field_name in ("elapsed", "ingest_s", "failed"):
                total[field_name] += result[field_name]
            total["raw_s"] += raw_s
            total["raw_cpu"] += raw_cpu
            if round_number == 0:
                first = result
        rows_total = size * TREE_ROUNDS
        figures[name] = {
            **first,
            **total,
            "rows": rows_total,
            "rounds": TREE_ROUNDS,
            "rate": rows_total / total["elapsed"],
            "raw_rate": rows_total / total["raw_s"],
            "ingest_rate": rows_total / total["ingest_s"],
            "cpu": spent,
        }
    return {key: figures["pipeline"], f"{key}_full": figures["full"]}


def per_row_figure(
    attest: Attest, raw: RawPool, key: str, method: str, total: int, batch: int, raw_calls
) -> dict:
    """Time per decision of a slow per-row method, in rounds that alternate raw and Attest.

    The rounds (a few, each a whole number of tasks per process) let both sides
    see the same drift in the machine's load. Per decision = wall x processes / rows.
    """
    bench = BENCHES[key]
    # Enough decisions in one request for PROCESSES tasks: the publisher merges requests
    # that come together into one task, and one task warms one pool process only.
    attest.warm(bench, method, 1, batch * (PROCESSES - 1) + 1)
    function = _raw_lime if method == "lime" else _raw_perm
    unit = PROCESSES * batch
    count = max(1, min(5, total // unit))
    size = max(unit, total // count // unit * unit)
    attest_s = raw_s = 0.0
    failed = 0
    first = None
    for round_number in range(count):
        items, rows = attest.decisions.take(bench, size)
        if round_number == 0:  # the raw processes' first call, untimed
            raw.run(function, raw_calls(rows[:PROCESSES], 1))
        raw_s += raw.run(function, raw_calls(rows, batch))
        run = attest.ingest(bench, method, items, size)
        figures = attest.wait(run)
        if method == "lime":  # LIME on: the same decisions' SHAP is computed too
            shap_run = Run(bench, "shap", run.ids, run.started, run.ingest_s, run.log_mark)
            figures["shap"] = attest.wait(shap_run)
        attest_s += figures["elapsed"]
        failed += figures["failed"]
        first = first or figures
    rows_count = count * size
    return {
        **first,
        "elapsed": attest_s,
        "failed": failed,
        "rows": rows_count,
        "rounds": count,
        "ms": attest_s * PROCESSES / rows_count * 1000,
        "raw_ms": raw_s * PROCESSES / rows_count * 1000,
    }


def lime_calls(rows, batch: int) -> list[tuple]:
    return [("lime", chunk) for chunk in chunks(rows, batch)]


def perm_calls(max_evals: int):
    def calls(rows, batch: int) -> list[tuple]:
        return [
            ("mlp", rows[start : start + batch], list(range(start, start + batch)), max_evals)
            for start in range(0, len(rows), batch)
        ]

    return calls


def latency_figure(
    attest: Attest, raw: RawPool, rate: int = LATENCY_RATE, seconds: float = LATENCY_SECONDS
) -> dict:
    """Steady ingestion at `rate`/s (one POST a tick); p95 of recorded_at -> stored SHAP."""
    from django.db.models import F

    from explain.models import Explanation

    bench = BENCHES["gbc"]
    per_tick = round(rate * LATENCY_TICK)
    ticks = round(seconds / LATENCY_TICK)
    items, rows = attest.decisions.take(bench, per_tick * ticks)
    raw_batches = raw.call(_raw_tree_batches, "gbc", rows, per_tick)
    mark = attest.workers.mark()
    started = datetime.now(UTC)
    began = time.perf_counter()
    ids, late = [], 0
    for tick in range(ticks):
        due = began + tick * LATENCY_TICK
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)  # pacing the load, not waiting on work
        elif wait < -LATENCY_TICK:
            late += 1
        ids += attest.post(items[tick * per_tick : (tick + 1) * per_tick])
    sent_s = time.perf_counter() - began
    run = Run(bench, "shap", ids, started, sent_s, mark)
    figures = attest.wait(run)
    latencies = sorted(
        (updated - recorded).total_seconds()
        for recorded, updated in Explanation.objects.filter(
            method="shap", decision_id__in=ids, status=Explanation.DONE
        ).values_list(F("decision__recorded_at"), "updated_at")
    )
    figures.update(
        rows=len(ids),
        sent_rate=len(ids) / sent_s,
        late_ticks=late,
        p50=ingest.percentile(latencies, 0.5),
        p95=ingest.percentile(latencies, 0.95),
        max=latencies[-1],
        raw_p50=ingest.percentile(raw_batches, 0.5),
        raw_p95=ingest.percentile(raw_batches, 0.95),
    )
    return figures


# --- diagnosis: where a batch's time goes (in this process, after the workers stopped) --------


def batch_breakdown(user, decisions: Decisions, raw: RawPool, key: str, batch: int) -> dict:
    """Median ms of run_batch's steps for one batch of `batch` decisions, and raw shap_values.

    The steps are called one by one as run_batch calls them (explain/batches.py), with
    a clock around each and the time of their SQL statements (as Django's cursor
    wrapper measures it: execution and fetch, not building the statement). The
    decisions are recorded in-process; the tasks that this enqueues are purged at
    the end (no worker runs any more).
    """
    from statistics import median

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from auditapp.accounts import roles
    from auditapp.decisions.services import record_decisions
    from auditapp.registry.models import ModelVersion
    from explain import batches, claims, engine, explainers, storing

    bench = BENCHES[key]
    repeats = 3
    items, rows = decisions.take(bench, batch * (repeats + 1))
    results = record_decisions(roles.Actor(user=user), {"decisions": items}, ip="127.0.0.1")
    ids = [r["id"] for r in results]
    steps: dict[str, list[float]] = {"setup": [], "claim": [], "engine": [], "store": []}
    sql: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats + 1):
        marks, queries = [time.perf_counter()], []
        with CaptureQueriesContext(connection) as captured:
            version = ModelVersion.objects.get(pk=bench.version.pk)
            context, explainer = explainers.cached_explainer(version, "shap")
            marks.append(time.perf_counter())
            queries.append(len(captured.captured_queries))
            claimed = claims.claim(version.pk, "shap", ids[i * batch : (i + 1) * batch])
            marks.append(time.perf_counter())
            queries.append(len(captured.captured_queries))
            explained = batches.explain_claimed(
                context, explainer, "shap", claimed, False, engine.SCORE_TOLERANCE
            )
            marks.append(time.perf_counter())
            queries.append(len(captured.captured_queries))
            storing.store_results(claimed, explained, version, "shap", (marks[3] - marks[2]) * 1000)
            marks.append(time.perf_counter())
            queries.append(len(captured.captured_queries))
        if i:  # the first round builds this process's explainer
            bounds = [0, *queries]
            for k, name in enumerate(steps):
                steps[name].append((marks[k + 1] - marks[k]) * 1000)
                timed = captured.captured_queries[bounds[k] : bounds[k + 1]]
                sql[name].append(sum(float(q["time"]) for q in timed) * 1000)
    figures = {name: median(values) for name, values in steps.items()}
    figures.update({f"{name}_sql": median(values) for name, values in sql.items()})
    figures["raw"] = median(raw.call(_raw_tree_batches, key, rows, batch)) * 1000
    figures.update(storage_floor(ids[-batch:], claimed, version))
    return figures


FLOOR_TABLE = "bench_explain_floor"


def storage_floor(ids: list[int], stored: list, version) -> dict:
    """Median ms of the least any design must do per batch: read the inputs, write the results.

    Read: the decisions' inputs by id, decoded. Write: one COPY of the batch's
    stored results (the values run_batch inserted) into a copy of the results
    table (same columns and indexes, no foreign keys), with nothing claimed, no
    work row pointed at them and no review rules. Whatever Attest does on top,
    the TreeSHAP ceiling is raw / (raw + read + write).
    """
    from statistics import median

    import orjson
    from django.db import connection

    from auditapp.decisions.models import Decision
    from explain import packing, records
    from explain.models import ExplanationResult

    columns = (
        *("decision_id", "config_id", "base_value", "attributions", "top_features"),
        *("quality", "seed", "duration_ms", "computed_at"),
    )
    names = version.parsed_schema.names
    config_id = ExplanationResult.objects.get(pk=stored[0].result_id).config_id
    id_array = "{" + ",".join(map(str, ids)) + "}"
    reads, writes = [], []
    raw = connection.connection  # the psycopg connection: COPY is not in Django's API
    with raw.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
        cursor.execute(
            f"CREATE TABLE {FLOOR_TABLE} (LIKE {ExplanationResult._meta.db_table} INCLUDING ALL)"
        )
        for _ in range(5):
            began = time.perf_counter()
            cursor.execute(
                f"SELECT id, inputs FROM {Decision._meta.db_table} WHERE id = ANY(%s::bigint[])",
                [id_array],
            )
            [orjson.loads(inputs) for _, inputs in cursor.fetchall()]
            reads.append(time.perf_counter() - began)
            cursor.execute(f"TRUNCATE {FLOOR_TABLE}")
            began = time.perf_counter()
            with cursor.copy(f"COPY {FLOOR_TABLE} ({', '.join(columns)}) FROM STDIN") as copy:
                for e in stored:
                    r = e.outcome
                    copy.write_row(
                        (
                            *(e.decision_id, config_id, r.base_value),
                            packing.pack(r.attributions, names),
                            orjson.dumps(r.top_features[: records.STORED_TOP]).decode(),
                            orjson.dumps(r.quality).decode(),
                            *(r.seed, 1.0, e.updated_at),
                        )
                    )
            writes.append(time.perf_counter() - began)
        cursor.execute(f"DROP TABLE {FLOOR_TABLE}")
    return {"floor_read": median(reads) * 1000, "floor_write": median(writes) * 1000}


def decode_cost() -> dict:
    """ms of one masked-model call's input preparation: Attest's decode vs a plain DataFrame.

    PermutationExplainer calls the model on (2 x features + 1) masks x background
    rows at a time; Attest turns every such array back into a frame with
    explain.frames.CategoryCodes.decode before predict_proba.
    """
    import timeit

    import numpy as np
    import pandas as pd

    from explain.frames import CategoryCodes

    bench = BENCHES["mlp"]
    codes = CategoryCodes(bench.version.parsed_schema)
    array = np.resize(bench.background, ((2 * N_FEATURES + 1) * 100, N_FEATURES))
    frame = pd.DataFrame(array, columns=NAMES)
    repeat = 20
    return {
        "rows": len(array),
        "decode": timeit.timeit(lambda: codes.decode(array), number=repeat) / repeat * 1000,
        "frame": timeit.timeit(lambda: pd.DataFrame(array, columns=NAMES), number=repeat)
        / repeat
        * 1000,
        "predict": timeit.timeit(lambda: bench.model.predict_proba(frame), number=repeat)
        / repeat
        * 1000,
    }


# --- output ------------------------------------------------------------------------------


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print(" | ".join(cells))


def met(ok: bool) -> str:
    return "yes" if ok else "NO"


def worker_share(figures: dict) -> str:
    """Where the pool's time went, from the worker's log."""
    return (
        f"{figures['batches']} batches / {figures['logged_rows']:,} rows; tasks took "
        f"{figures['task_s']:.2f} process-s, of which engine.explain {figures['engine_s']:.2f} s "
        f"({figures['engine_s'] / max(figures['task_s'], 1e-9):.0%}); "
        f"wall x {PROCESSES} = {figures['elapsed'] * PROCESSES:.2f} process-s; "
        f"ran on {', '.join(figures['processes'])}"
    )


def engine_per_row(figures: dict) -> str:
    """The library part alone, per decision, beside raw (both per process)."""
    engine_ms = figures["engine_s"] / max(figures["logged_rows"], 1) * 1000
    tasks_ms = figures["task_s"] / max(figures["logged_rows"], 1) * 1000
    idle_ms = (figures["elapsed"] * PROCESSES - figures["task_s"]) / figures["rows"] * 1000
    return (
        f"per decision: engine.explain {engine_ms:.1f} ms ({engine_ms / figures['raw_ms']:.2f}x "
        f"raw), whole tasks {tasks_ms:.1f} ms, pool idle {idle_ms:.1f} ms; "
        f"raw {figures['raw_ms']:.1f} ms"
    )


def report(results: dict, context: dict) -> None:
    lime, perm, lat = (results[k] for k in ("lime", "perm", "latency"))
    rows = []
    for number, key, model in (
        ("1", "gbc", "GBC 100 x depth 3"),
        ("2", "lgbm", "LightGBM 200 x depth 6"),
        ("3", "xgb", "XGBoost 200 x depth 6"),
    ):
        pipeline, full = results[key], results[f"{key}_full"]
        share = pipeline["rate"] / pipeline["raw_rate"]
        rows.append(
            (
                f"{number}a. TreeSHAP {model}, pipeline, decisions/s ({pipeline['rows']:,} rows)",
                f"{pipeline['rate']:,.0f}/s",
                f"{pipeline['raw_rate']:,.0f}/s",
                f"{share:.0%} of raw",
                f"{met(share >= TARGET_TREE_SHARE)} (>= {TARGET_TREE_SHARE:.0%})",
            )
        )
        rows.append(
            (
                f"{number}b.   the same from the first POST ({full['rows']:,} rows)",
                f"{full['rate']:,.0f}/s",
                f"{full['raw_rate']:,.0f}/s",
                f"{full['rate'] / full['raw_rate']:.0%} of raw",
                f"capped by ingestion, {pipeline['ingest_rate']:,.0f}/s alone",
            )
        )
    for label, figures in (
        (f"4. LIME 5000 samples, ms/decision ({lime['rows']} rows)", lime),
        (f"5. permutation SHAP MLP, ms/decision ({perm['rows']} rows)", perm),
    ):
        times = figures["ms"] / figures["raw_ms"]
        rows.append(
            (
                label,
                f"{figures['ms']:,.1f} ms",
                f"{figures['raw_ms']:,.1f} ms",
                f"{times:.2f}x raw",
                f"{met(times <= TARGET_PER_ROW_TIMES)} (<= {TARGET_PER_ROW_TIMES}x)",
            )
        )
    rows.append(
        (
            f"6. p95 ingestion -> stored SHAP at {lat['sent_rate']:.0f}/s ({lat['rows']:,} rows)",
            f"{lat['p95'] * 1000:,.0f} ms",
            f"{lat['raw_p95'] * 1000:,.1f} ms",
            f"{lat['p95'] / lat['raw_p95']:,.0f}x raw",
            f"{met(lat['p95'] <= TARGET_P95_S)} (<= {TARGET_P95_S:.0f} s)",
        )
    )
    per_tick = round(LATENCY_RATE * LATENCY_TICK)
    print()
    print(
        f"Attest explanation benchmark — PostgreSQL {context['pg']}, {context['db']}; "
        f"broker {context['broker']}; Python {sys.version.split()[0]}, {context['libs']}; "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"processes: Attest = 1 Celery worker, prefork --concurrency {PROCESSES} "
        f"({PROCESSES} pool processes do the work; the parent only talks to the broker), fed "
        f"over HTTP by the app in a subprocess; raw = multiprocessing spawn Pool({PROCESSES}); "
        f"{'/'.join(THREAD_VARIABLES)}={os.environ['OMP_NUM_THREADS']} everywhere"
    )
    trees = ", ".join(f"{results[k]['rows']:,} ({n})" for n, k in (("1", "gbc"), ("2", "lgbm")))
    print(
        f"rows: {trees}, {results['xgb']['rows']:,} (3) for a and again for b, "
        f"{lime['rows']} (4), {perm['rows']} (5), {lat['rows']:,} (6) decisions of "
        f"{N_FEATURES} numeric features; the raw side explains the same rows"
    )
    print(
        f"batches: Attest enqueues {context['batch']} decisions a SHAP task, "
        f"{context['lime_batch']} a LIME task (permutation SHAP re-split into "
        f"{context['per_row_batch']}); POSTs of {POST_SIZE:,} for 1-3, one POST a round "
        f"for 4-5, {per_tick} every {LATENCY_TICK * 1000:.0f} ms for 6; raw runs the same batch "
        f"sizes. 1a-3a (the pipeline): the decisions are recorded while the workers consume "
        f"nothing from the explain queue, then rows / (newest Explanation.updated_at - the "
        f"workers resume); 1b-3b: rows / (newest Explanation.updated_at - first POST), with "
        f"the workers running; 'alone' = the a-run's POSTs, no worker competing; raw: rows / "
        f"wall of shap_values in the pool, measured beside each run. "
        f"4-5: wall x {PROCESSES} processes / rows on both sides, in {lime['rounds']} and "
        f"{perm['rounds']} rounds alternating raw and Attest. 6: raw = shap_values on one "
        f"{per_tick}-row batch"
    )
    print(
        f"autovacuum={context['autovacuum']} on this server: the bench runs ANALYZE on the "
        "decisions and explanations tables before each figure"
    )
    print(
        f"load average: {context['load_before']} before, {context['load_after']} after "
        "(other processes share this machine)"
    )
    print()
    print_table(rows, ("figure", "Attest", "raw", "ratio", "target met?"))
    if context["orphans"]:
        print()
        print(
            "explanations left pending with no task (a SHAP and a LIME task of the same "
            "decisions claimed at once; re-sent by the bench, else the sweeper would after "
            "its grace period): "
            + "; ".join(f"{n} {name}/{method}" for name, method, n in context["orphans"])
        )
    print()
    print("where the workers' time went (explain.batch.done and task lines of the worker log):")
    for number, key in (("1", "gbc"), ("2", "lgbm"), ("3", "xgb")):
        figures = results[key]
        worker_rate = figures["rows"] / (figures["task_s"] / PROCESSES)
        print(f"  {number}a. {worker_share(figures)}")
        print(
            f"     ingestion over HTTP took {figures['ingest_s']:.2f} s "
            f"({figures['ingest_rate']:,.0f}/s); the workers' tasks alone: "
            f"{worker_rate:,.0f}/s ({worker_rate / figures['raw_rate']:.0%} of raw); "
            f"raw wall {figures['raw_s']:.2f} s; left out of 'a': {figures['restart_s']:.2f} s "
            f"from add_consumer to the first task received ({figures['rounds']} rounds)"
        )
        for label, run in (("a", figures), ("b", results[f"{key}_full"])):
            cpu = run["cpu"]
            attest_us = sum(cpu.values()) / run["rows"] * 1e6
            raw_us = run["raw_cpu"] / run["rows"] * 1e6
            print(
                f"     {number}{label} CPU per decision: Attest {attest_us:,.0f} us (worker "
                f"{cpu['workers'] / run['rows'] * 1e6:,.0f}, PostgreSQL "
                f"{cpu['postgres'] / run['rows'] * 1e6:,.0f}, app server "
                f"{cpu['server'] / run['rows'] * 1e6:,.0f}), raw {raw_us:,.0f} us: "
                f"raw / Attest = {raw_us / attest_us:.0%}"
            )
    print(f"  4. LIME: {worker_share(lime)}")
    print(f"     {engine_per_row(lime)}")
    print(
        f"     (the task time includes the same decisions' {lime['shap']['batches']} SHAP "
        f"batch(es), engine.explain {lime['shap']['engine_s']:.2f} s)"
    )
    print(f"  5. {worker_share(perm)}")
    print(f"     {engine_per_row(perm)}")
    print(
        f"  6. {worker_share(lat)}; p50 {lat['p50'] * 1000:.0f} ms, max {lat['max'] * 1000:.0f} "
        f"ms; raw p50 {lat['raw_p50'] * 1000:.1f} ms; {lat['late_ticks']} POST(s) more than "
        "a tick late"
    )
    print()
    print(
        f"one {context['batch']}-decision SHAP batch in-process (run_batch's steps, median of 3, "
        "no worker running):"
    )
    for key, figures in context["breakdown"].items():
        total = sum(figures[k] for k in ("setup", "claim", "engine", "store"))
        parts = ", ".join(
            f"{k} {figures[k]:.0f} ms (SQL {figures[k + '_sql']:.0f})"
            for k in ("claim", "engine", "store", "setup")
        )
        floor = figures["floor_read"] + figures["floor_write"]
        print(
            f"  {BENCHES[key].name}: {parts} = {total:.0f} ms; "
            f"raw shap_values {figures['raw']:.0f} ms"
        )
        print(
            f"    storage floor: reading the inputs {figures['floor_read']:.1f} ms + one COPY "
            f"of the results into a copy of the table {figures['floor_write']:.1f} ms: "
            f"no design that stores each decision's explanation exceeds "
            f"{figures['raw'] / (figures['raw'] + floor):.0%} of raw on this model"
        )
    decode = context["decode"]
    print(
        f"permutation SHAP, one masked-model call of {decode['rows']:,} rows: "
        f"CategoryCodes.decode {decode['decode']:.1f} ms vs pd.DataFrame(array) "
        f"{decode['frame']:.1f} ms; predict_proba itself {decode['predict']:.1f} ms"
    )


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    configure_env()
    # Said once per batch by the app's own code (the worker logs it too); noise here.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    warnings.filterwarnings("ignore", message="LightGBM binary classifier")
    started = time.perf_counter()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ingest.ensure_database()
    ingest.setup_django()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from auditapp.accounts.services import create_api_token, revoke_api_token
    from explain import batches, publishing, shap_backend

    call_command("migrate", verbosity=0, interactive=False)
    refuse_other_workers()
    print(f"broker: purged {purge_broker()} stale task message(s)")
    user = ingest.bench_user()
    frame, labels, background, pool = dataset()
    register_all(user, frame, labels, background)
    kinds = {"gbc": "tree", "lgbm": "tree", "xgb": "tree", "lime": "lime", "mlp": "perm"}
    specs = {
        key: (kind, BENCHES[key].model, BENCHES[key].background, BENCHES[key].positive)
        for key, kind in kinds.items()
    }
    batch = settings.ATTEST_EXPLAIN_BATCH_SIZE
    lime_batch = getattr(publishing, "LIME_BATCH", batch)  # LIME has its own batch size, or not
    max_evals = shap_backend.AGNOSTIC_MAX_EVALS
    decisions = Decisions(pool, secrets.token_hex(4))
    token, key = create_api_token(user, scopes=["ingest"], name="bench/explain.py")
    server = workers = client = raw = None
    results: dict = {}
    try:
        workers = Workers(PROCESSES)
        server = ingest.Server()
        raw = RawPool(specs)
        server.wait_ready()
        workers.wait_ready()
        client = ingest.Client(server.port, key)
        attest = Attest(client, workers, decisions, server.process.pid)
        steps = {
            "gbc": lambda: tree_figure(attest, raw, "gbc", GBC_ROWS, batch),
            "lgbm": lambda: tree_figure(attest, raw, "lgbm", LGBM_ROWS, batch),
            "xgb": lambda: tree_figure(attest, raw, "xgb", XGB_ROWS, batch),
            "lime": lambda: {
                "lime": per_row_figure(
                    attest, raw, "lime", "lime", LIME_ROWS, lime_batch, lime_calls
                )
            },
            "perm": lambda: {
                "perm": per_row_figure(
                    attest,
                    raw,
                    "mlp",
                    "shap",
                    PERM_ROWS,
                    batches.PER_ROW_BATCH,
                    perm_calls(max_evals),
                )
            },
            "latency": lambda: {"latency": latency_figure(attest, raw)},
        }
        ends = {}
        previous: list[str] = []
        for name, step in steps.items():
            ends.update(dict.fromkeys(previous, workers.mark()))
            analyze_tables()
            began = time.perf_counter()
            figures = step()
            results.update(figures)
            print(f"{name}: done in {time.perf_counter() - began:.0f} s", flush=True)
            previous = list(figures)
        workers.stop()  # the log is complete now
        for name, figures in results.items():
            workers.evidence(figures, ends.get(name))
        workers.evidence(results["lime"]["shap"], ends["lime"])
        analyze_tables()
        breakdown = {
            key: batch_breakdown(user, decisions, raw, key, batch) for key in ("gbc", "lgbm", "xgb")
        }
        decode = decode_cost()
    finally:
        if client is not None:
            client.close()
        if raw is not None:
            raw.close()
        if server is not None:
            server.stop()
        if workers is not None:
            workers.stop()
        revoke_api_token(token)
        purged = purge_broker()
        if workers is not None and os.environ.get("BENCH_KEEP_WORKER_LOG"):
            print(f"worker log kept at {workers.log_path}")
        elif workers is not None:
            with contextlib.suppress(OSError):
                workers.log_path.unlink()

    import lightgbm
    import lime
    import shap
    import sklearn
    import xgboost

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
        cursor.execute("SHOW autovacuum")
        autovacuum = cursor.fetchone()[0]
    context = {
        "pg": pg_version.split()[0],
        "autovacuum": autovacuum,
        "db": connection.settings_dict["NAME"],
        "broker": settings.CELERY_BROKER_URL,
        "libs": (
            f"shap {shap.__version__}, lime {getattr(lime, '__version__', '0.2.x')}, "
            f"lightgbm {lightgbm.__version__}, xgboost {xgboost.__version__}, "
            f"scikit-learn {sklearn.__version__}"
        ),
        "batch": batch,
        "lime_batch": lime_batch,
        "orphans": attest.orphans,
        "per_row_batch": batches.PER_ROW_BATCH,
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "breakdown": breakdown,
        "decode": decode,
    }
    report(results, context)
    print()
    print(
        f"cleanup: workers and server stopped, token revoked, broker purged "
        f"({purged} task message(s)); {time.perf_counter() - started:.0f} s in all"
    )


if __name__ == "__main__":
    main()
