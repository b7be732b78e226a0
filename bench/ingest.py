"""Ingestion benchmark: decisions per second through POST /api/v1/decisions.

Run with `.venv/bin/python bench/ingest.py` (or `make bench`). Not a test: it
prints figures and checks them against the targets of the ingestion issue.

What it does, against PostgreSQL and Redis (nothing else is touched):

1. DATABASE_URL (default postgres://postgres@127.0.0.1:5432/attest_bench) is
   created if missing and migrated; CELERY_BROKER_URL defaults to Redis db 14.
   Files (the model artifact) go to var/bench/ unless ATTEST_VAR_DIR is set.
2. The demo credit model is registered if missing, with an ml_engineer user
   and a fresh ingest token.
3. The real app is served over HTTP on a free port of 127.0.0.1, in a
   subprocess of this script (`--serve`): Django's threaded WSGI server (the
   one `runserver` uses; threaded so that HTTP/1.1 keep-alive works), with a
   thin wrapper, here in bench/, that reports the time spent inside the Django
   handler in an `X-Bench-Server-Ms` response header.
4. Batches of 1, 100 and 10,000 realistic credit decisions (fresh request_ids
   every run) are POSTed over one keep-alive connection.
5. Raw baseline in the same run, interleaved with the POSTs: single-row
   INSERT and COPY of the same rows into a scratch table shaped like the
   decisions table (same columns, indexes, unique constraint and foreign
   keys), dropped at the end.
6. The server is stopped and the broker's queues are purged (explanation
   tasks are enqueued after each commit; no worker runs here).

`--profile` instead profiles record_decisions in-process on a 10,000-decision
batch and prints the top cumulative entries (`--size 1 --calls 300` for
single decisions, `--sort tottime`, `--top N`).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import gc
import http.client
import io
import itertools
import json
import os
import pstats
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/attest_bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/14"
MODEL, VERSION = "credit", "1"
USERNAME = "bench-mlengineer"
SCRATCH_TABLE = "bench_raw_decisions"
TIMING_HEADER = "X-Bench-Server-Ms"

BATCH1_WARMUP = 20
BATCH1_REQUESTS = 300
BATCH100_WARMUP = 2
BATCH100_REPS = 20
BATCH10K_REPS = 5
BIG = 10_000

TARGET_COPY_SHARE = 0.5  # a 10,000 batch at >= 50% of the raw COPY rate
TARGET_P50_MS = 10.0  # single-decision POST p50 at the server


def configure_env() -> None:
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    os.environ["DJANGO_SETTINGS_MODULE"] = "auditapp.settings"
    os.environ.setdefault("ATTEST_VAR_DIR", str(ROOT / "var" / "bench"))
    # As in production: no debug wrappers, no per-request log lines.
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("LOG_LEVEL", "WARNING")


def database_params() -> dict:
    import dj_database_url

    config = dj_database_url.parse(os.environ["DATABASE_URL"])
    if config["ENGINE"] != "django.db.backends.postgresql":
        sys.exit(f"bench/ingest.py needs PostgreSQL; DATABASE_URL is {config['ENGINE']}.")
    params = {
        "dbname": config["NAME"],
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
    }
    return {k: v for k, v in params.items() if v is not None}


def ensure_database() -> None:
    import psycopg
    from psycopg import sql

    params = database_params()
    name = params["dbname"]
    with psycopg.connect(**{**params, "dbname": "postgres"}, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"created database {name}")


def setup_django() -> None:
    import django
    from django.conf import settings

    django.setup()
    # The benches' models are made without four-eyes: they measure ingestion, explanations
    # and serving, whose stage and traffic changes would otherwise wait for a second person
    # (approvals are tested in tests/approvals). Their own databases only.
    settings.ATTEST_FOUR_EYES_NEW_MODELS = False


# --- the server (a subprocess of this script) -----------------------------------


def timed_application(application):
    """The WSGI app, reporting the time spent in Django in a response header."""

    def wrapper(environ, start_response):
        began = time.perf_counter()
        captured = []

        def capture(status, headers, exc_info=None):
            captured.append((status, headers, exc_info))

        body = application(environ, capture)
        elapsed_ms = (time.perf_counter() - began) * 1000
        status, headers, exc_info = captured[-1]
        start_response(status, [*headers, (TIMING_HEADER, f"{elapsed_ms:.3f}")], exc_info)
        return body

    return wrapper


def serve(address: str) -> None:
    """What `runserver` runs (threaded, so keep-alive works), minus autoreload and checks."""
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class Handler(WSGIRequestHandler):
        def setup(self):
            super().setup()
            # wsgiref writes the headers and the body separately; with Nagle's
            # algorithm the body then waits for the client's delayed ACK
            # (~40 ms on Linux), which no production server suffers from.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    host, port = address.rsplit(":", 1)
    server = ThreadedWSGIServer((host, int(port)), Handler)
    server.set_app(timed_application(get_wsgi_application()))
    server.serve_forever()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The app served by a subprocess; stopped on exit.

    By default this script's `--serve` (Django's threaded server); `command(port)` gives
    another one's command line (bench/serve.py: gunicorn).
    """

    def __init__(self, command=None) -> None:
        self.port = free_port()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives until stop()
        if command is None:
            arguments = [sys.executable, str(Path(__file__).resolve()), "--serve"]
            arguments.append(f"127.0.0.1:{self.port}")
        else:
            arguments = command(self.port)
        self.process = subprocess.Popen(
            arguments,
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/api/v1/decisions")
                conn.getresponse().read()
                conn.close()
                return time.monotonic() - began
            except OSError:
                time.sleep(0.05)  # poll interval, not a fixed wait
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, size: int = 4000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-size:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Client:
    """POSTs over one keep-alive HTTP/1.1 connection; counts reconnections."""

    def __init__(self, port: int, key: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.headers = {"Authorization": f"Token {key}", "Content-Type": "application/json"}
        self.connections = 0
        self.requests = 0

    def post(self, body: bytes) -> tuple[float, float, bytes]:
        """(client seconds, server ms, response body) of one POST /api/v1/decisions."""
        if self.conn.sock is None:
            self.connections += 1
        self.requests += 1
        began = time.perf_counter()
        self.conn.request("POST", "/api/v1/decisions", body=body, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - began
        if response.status != 201:
            raise RuntimeError(f"POST answered {response.status}: {data[:1000]!r}")
        return elapsed, float(response.getheader(TIMING_HEADER, "nan")), data

    def close(self) -> None:
        self.conn.close()


# --- fixtures --------------------------------------------------------------------


def bench_user():
    from django.contrib.auth import get_user_model

    from auditapp.accounts import roles
    from auditapp.accounts.services import create_user

    user = get_user_model().objects.filter(username=USERNAME).first()
    return user or create_user(USERNAME, roles.ML_ENGINEER)


def bench_model(user, explain: dict | None = None):
    """(model version, fitted model): registered once per database (with `explain`, the
    version's explanation settings), trained every run."""
    from django.db import transaction

    from auditapp.accounts import roles
    from auditapp.demo import credit
    from auditapp.registry import services as registry
    from auditapp.registry.models import ModelVersion, RegisteredModel

    frame = credit.applicants(6000, seed=7)
    model = credit.train_model(frame.iloc[:4000])
    actor = roles.Actor(user=user)
    version = ModelVersion.objects.filter(registered_model__name=MODEL, version=VERSION).first()
    if version is None:
        with transaction.atomic():
            version = register_demo_version(
                actor,
                VERSION,
                model,
                frame[credit.FEATURES].iloc[4000:4200],
                "Demo credit model (bench/ingest.py).",
                explain,
            )
            version = registry.change_stage(actor, version, ModelVersion.PRODUCTION)
    elif not RegisteredModel.objects.visible_to(actor).filter(name=MODEL).exists():
        registry.assign_models(user, [MODEL])
    return version, model


def register_demo_version(actor, version: str, model, background, description: str, explain=None):
    """A version of the demo credit model registered through the real service (skops)."""
    import skops.io

    from auditapp.demo import credit
    from auditapp.registry import services as registry

    csv = io.StringIO()
    background.to_csv(csv, index=False)
    upload = registry.VersionUpload(
        name=MODEL,
        version=version,
        artifact=skops.io.dumps(model),
        artifact_format="skops",
        schema=credit.SCHEMA,
        background=csv.getvalue().encode(),
        card={"description": description},
        explain=explain,
    )
    return registry.register_model_version(actor, upload)


class Payloads:
    """Realistic credit decisions with request_ids unique to this run, handed out once."""

    def __init__(self, model, count: int, run_tag: str) -> None:
        from auditapp.demo import credit

        frame = credit.applicants(count, seed=int(run_tag[:6], 16))
        start = datetime.now(UTC) - timedelta(days=2)
        self.items = list(
            credit.decision_payloads(
                model,
                frame,
                model_name=MODEL,
                version=VERSION,
                start=start,
                spacing=timedelta(seconds=1),
            )
        )
        for i, item in enumerate(self.items):
            item["request_id"] = f"bench-{run_tag}-{i:06d}"
        self.next = 0

    def take(self, n: int) -> list[dict]:
        if self.next + n > len(self.items):
            raise RuntimeError("the payload pool is too small")
        chunk = self.items[self.next : self.next + n]
        self.next += n
        return chunk


# --- the raw baseline --------------------------------------------------------------

RAW_COLUMNS = (
    "registered_model_id",
    "model_version_id",
    "request_id",
    "subject_ref",
    "inputs",
    "prediction",
    "score",
    "predicted_at",
    "recorded_at",
    "source",
    "metadata",
    "content_hash",
    "recorded_by_id",
    "client",
)


class RawBaseline:
    """psycopg straight into a scratch copy of the decisions table: no validation, no hash."""

    def __init__(self, model_version, user, create: bool = True) -> None:
        """`create`: (re)create the scratch table; without it, use the one another made."""
        import psycopg

        from auditapp.decisions.models import Decision

        self.conn = psycopg.connect(**database_params(), autocommit=True)
        self.model_id = model_version.registered_model_id
        self.version_id = model_version.pk
        self.user_id = user.pk
        self.client = user.get_username()
        self.copy_sql = f"COPY {SCRATCH_TABLE} ({', '.join(RAW_COLUMNS)}) FROM STDIN"
        self.insert_sql = (
            f"INSERT INTO {SCRATCH_TABLE} ({', '.join(RAW_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(RAW_COLUMNS))})"
        )
        if not create:
            return
        real = Decision._meta.db_table
        self.conn.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        # Same columns, defaults, identity, NOT NULLs, checks and indexes
        # (the unique (registered_model, request_id) among them) ...
        self.conn.execute(f"CREATE TABLE {SCRATCH_TABLE} (LIKE {real} INCLUDING ALL)")
        # ... and the same foreign keys, which LIKE does not copy.
        for (definition,) in self.conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'f'",
            [real],
        ).fetchall():
            self.conn.execute(f"ALTER TABLE {SCRATCH_TABLE} ADD {definition}")
        self.indexes = self.conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = %s", [SCRATCH_TABLE]
        ).fetchone()[0]

    def _row(self, item: dict, now: datetime) -> tuple:
        from psycopg.types.json import Jsonb

        return (
            self.model_id,
            self.version_id,
            item["request_id"],
            item.get("subject_ref"),
            Jsonb(item["inputs"]),
            Jsonb(item["prediction"]),
            item.get("score"),
            item["predicted_at"],
            now,
            "api",
            Jsonb(item.get("metadata", {})),
            "0" * 64,
            self.user_id,
            self.client,
        )

    def copy(self, items: list[dict]) -> float:
        """Seconds for one committed COPY of the items."""
        began = time.perf_counter()
        now = datetime.now(UTC)
        with (
            self.conn.transaction(),
            self.conn.cursor() as cursor,
            cursor.copy(self.copy_sql) as copy,
        ):
            for item in items:
                copy.write_row(self._row(item, now))
        return time.perf_counter() - began

    def insert_one(self, item: dict) -> float:
        """Seconds for one autocommitted single-row INSERT."""
        began = time.perf_counter()
        self.conn.execute(self.insert_sql, self._row(item, datetime.now(UTC)))
        return time.perf_counter() - began

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        self.conn.close()


# --- figures ---------------------------------------------------------------------


def reserve_decision_ids(cursor, count: int) -> list[int]:
    """`count` new decision ids of this month (auditapp/partitions.py), for COPY."""
    cursor.execute("SELECT decisions_decision_next_id() FROM generate_series(1, %s)", [count])
    return [row[0] for row in cursor.fetchall()]


def bench_config_id(version, method: str) -> int:
    """The id of a configuration row for results the benches write with COPY."""
    from explain import records
    from explain.models import ExplanationConfig

    digest = records.config_digest(method, "bench", "bench", "log_odds", {})
    return ExplanationConfig.objects.get_or_create(
        model_version=version,
        method=method,
        digest=digest,
        defaults={
            "explainer": "bench",
            "library_version": "bench",
            "output_space": "log_odds",
            "content": {},
        },
    )[0].pk


def copy_model_rows(cursor, model, rows) -> None:
    """COPY rows (dicts keyed by column name) into a model's table, naming every column.

    The columns come from the model, so a column it gains later takes the field's
    default (or NULL) here instead of breaking the benches' COPY; a required
    column no row names fails at once, by name.
    """
    from django.db import connection

    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    pk = model._meta.pk.column
    # The primary key is named only if the rows carry it (ids reserved beforehand).
    fields = [f for f in model._meta.concrete_fields if f.column != pk or pk in first]
    fill = {}
    for f in fields:
        if f.has_default():
            fill[f.column] = f.get_db_prep_save(f.get_default(), connection)
        elif f.null:
            fill[f.column] = None
    columns = [f.column for f in fields]
    sql = f"COPY {model._meta.db_table} ({', '.join(columns)}) FROM STDIN"
    with cursor.cursor.copy(sql) as copy:
        for row in itertools.chain([first], rows):
            missing = [c for c in columns if c not in row and c not in fill]
            if missing:
                raise KeyError(f"{model._meta.db_table}: no value for {', '.join(missing)}")
            copy.write_row(tuple(row[c] if c in row else fill[c] for c in columns))


def reserve_ids(cursor, model, count: int) -> list[int]:
    """`count` new ids of a model's table, for rows written with COPY.

    A table partitioned by month (auditapp/partitions.py) draws them from its id function.
    """
    table = model._meta.db_table
    cursor.execute("SELECT to_regprocedure(%s) IS NOT NULL", [f"{table}_next_id()"])
    if cursor.fetchone()[0]:
        cursor.execute(f"SELECT {table}_next_id() FROM generate_series(1, %s)", [count])
    else:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, count],
        )
    return [row[0] for row in cursor.fetchall()]


def copy_explanations(cursor, rows: list[tuple], now) -> None:
    """COPY finished explanations: a result row each, its work row pointing to it, and the
    top reasons of the SHAP ones.

    `rows` are (decision_id, method, config_id, base_value, packed attributions,
    top-3 JSON, quality JSON, seed, duration_ms, agreement JSON or None).
    """
    import orjson

    from explain.models import Explanation, ExplanationResult
    from explain.reasons import replace_top_reasons

    result_ids = reserve_ids(cursor, ExplanationResult, len(rows))
    copy_model_rows(
        cursor,
        ExplanationResult,
        (result_row(result_id, row, now) for result_id, row in zip(result_ids, rows, strict=True)),
    )
    copy_model_rows(
        cursor,
        Explanation,
        (
            {
                "decision_id": row[0],
                "method": row[1],
                "status": "done",
                "attempts": 1,
                "result_id": result_id,
                "agreement": row[-1],
                "created_at": now,
                "updated_at": now,
            }
            for result_id, row in zip(result_ids, rows, strict=True)
        ),
    )
    # The search's reasons, as the product writes them beside each SHAP result.
    shap_rows = [row for row in rows if row[1] == "shap"]
    moments = predicted_at_of(cursor, [row[0] for row in shap_rows])
    replace_top_reasons([(row[0], moments[row[0]], orjson.loads(row[5])) for row in shap_rows])


def predicted_at_of(cursor, decision_ids: list[int]) -> dict:
    """decision id -> its predicted_at (the top reasons carry it)."""
    from auditapp.sqlarrays import id_array

    cursor.execute(
        "SELECT id, predicted_at FROM decisions_decision WHERE id = ANY(%s::bigint[])",
        [id_array(decision_ids)],
    )
    return dict(cursor.fetchall())


def result_row(result_id: int, row: tuple, now) -> dict:
    """An explain_explanationresult row from a copy_explanations tuple."""
    decision_id, _method, config_id, base_value, packed, top, quality, seed, duration, _ = row
    return {
        "id": result_id,
        "decision_id": decision_id,
        "config_id": config_id,
        "base_value": base_value,
        "attributions": packed,
        "top_features": top,
        "quality": quality,
        "seed": seed,
        "duration_ms": duration,
        "computed_at": now,
    }


def copy_decision_row(
    version,
    model_name: str,
    payload: dict,
    *,
    decision_id: int,
    request_id: str,
    predicted_at: datetime,
    recorded_at: datetime,
    client: str,
) -> tuple:
    """A decisions_decision row in DECISION_COLUMNS order, built by the product's own row
    builder as ingestion builds it today: document form 2 (every input committed to, with
    a fresh salt), the sensitive values sealed with AES-GCM and their blind-index tokens.

    For benchmarks that fill a table fast (bench/chain.py, monitor.py), so that what they
    verify or read is what a deployment holds. `model_name` is passed in because a
    related-object query on the connection that is running the COPY would wait for the
    COPY for ever (the version's registered model must be loaded before it starts).
    """
    from auditapp.decisions import services
    from auditapp.decisions.validation import CheckedDecision
    from auditapp.encryption import NONCE_BYTES
    from auditapp.hashing import SALT_BYTES

    del model_name  # the row builder reads it from the version, loaded before the COPY
    stamp = _stamp(recorded_at, client)
    randomness = secrets.token_bytes(SALT_BYTES + NONCE_BYTES)
    checked = CheckedDecision(
        index=0,
        model_version=version,
        request_id=request_id,
        inputs=payload["inputs"],
        prediction=payload["prediction"],
        score=payload.get("score"),
        predicted_at=predicted_at,
        subject_ref=payload.get("subject_ref"),
        metadata={},
    )
    row = services._row(checked, stamp, randomness[:SALT_BYTES], randomness[SALT_BYTES:])
    return services.row_values(decision_id, row)


@functools.lru_cache(maxsize=1)
def _stamp(recorded_at: datetime, client: str):
    """What the rows being written share (one request's stamp), kept between calls."""
    from auditapp.accounts import roles
    from auditapp.decisions import services

    actor = roles.system_actor(client)
    return services._Stamp(recorded_at, services._time_text(recorded_at), "import", actor)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def body_of(items: list[dict]) -> bytes:
    document = items[0] if len(items) == 1 else {"decisions": items}
    return json.dumps(document).encode()


def check_created(data: bytes, expected: int) -> None:
    results = json.loads(data)["results"]
    created = sum(r["status"] == "created" for r in results)
    if created != expected:
        raise RuntimeError(f"expected {expected} created decisions, got {created}")


def http_batches(client: Client, raw: RawBaseline, payloads: Payloads, size: int, reps: int):
    """Batches POSTed, each followed by a raw COPY of the same rows (interleaved, so that
    drifting load on the machine weighs on both alike)."""
    rates, server_rates, raw_rates = [], [], []
    for _ in range(reps):
        items = payloads.take(size)
        body = body_of(items)
        elapsed, server_ms, data = client.post(body)
        check_created(data, size)
        rates.append(size / elapsed)
        server_rates.append(size / (server_ms / 1000))
        raw_rates.append(size / raw.copy(items))
    attest = {
        "rate": statistics.median(rates),
        "server_rate": statistics.median(server_rates),
        "min": min(rates),
        "max": max(rates),
        "body_mb": len(body) / 1e6,
    }
    baseline = {"rate": statistics.median(raw_rates), "min": min(raw_rates), "max": max(raw_rates)}
    return attest, baseline


def http_singles(client: Client, raw: RawBaseline, payloads: Payloads, count: int):
    """Single-decision POSTs, each followed by a raw INSERT of the same row."""
    client_ms, server_ms, raw_ms, answers = [], [], [], []
    for item in payloads.take(count):
        body = body_of([item])
        elapsed, server, data = client.post(body)
        client_ms.append(elapsed * 1000)
        server_ms.append(server)
        answers.append(data)
        raw_ms.append(raw.insert_one(item) * 1000)
    for data in answers:
        check_created(data, 1)
    attest = {
        "rate": count / (sum(client_ms) / 1000),
        "p50": percentile(client_ms, 0.5),
        "p95": percentile(client_ms, 0.95),
        "server_p50": percentile(server_ms, 0.5),
        "server_p95": percentile(server_ms, 0.95),
    }
    baseline = {
        "rate": count / (sum(raw_ms) / 1000),
        "p50": percentile(raw_ms, 0.5),
        "p95": percentile(raw_ms, 0.95),
    }
    return attest, baseline


def in_process_singles(actor_factory, payloads: Payloads, warmup: int, count: int) -> dict:
    from auditapp.decisions.services import record_decisions

    timings = []
    for item in payloads.take(warmup + count):
        began = time.perf_counter()
        record_decisions(actor_factory(), item, source="api", ip="127.0.0.1")
        timings.append((time.perf_counter() - began) * 1000)
    timings = timings[warmup:]
    return {"p50": percentile(timings, 0.5), "p95": percentile(timings, 0.95)}


def purge_broker(own_broker_url: str = DEFAULT_BROKER_URL) -> int:
    """Drop the task messages this run enqueued; return how many there were.

    On the bench's own Redis database (the default) kombu's routing keys go
    too, leaving it empty; elsewhere they stay, as a running producer relies
    on them.
    """
    from django.conf import settings

    from auditapp.celery import app

    purged = app.control.purge() or 0
    if own_broker_url == settings.CELERY_BROKER_URL:
        import redis

        client = redis.Redis.from_url(own_broker_url)
        try:
            keys = list(client.scan_iter("_kombu.binding*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    return purged


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}/s"


def fmt_ms(value: float) -> str:
    return f"{value:.2f} ms"


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("figure", "Attest", "raw baseline", "ratio")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = "-+-".join("-" * w for w in widths)
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for row in rows:
        label = row[0].ljust(widths[0])
        figures = (c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
        print(" | ".join([label, *figures]))


def share(attest_rate: float, raw_rate: float) -> str:
    return f"{attest_rate / raw_rate:.0%} of raw"


def times(attest_ms: float, raw_ms: float) -> str:
    return f"{attest_ms / raw_ms:.1f}x raw"


# --- main ------------------------------------------------------------------------


def migrated() -> None:
    """The bench database exists, Django is set up on it and it is migrated."""
    ensure_database()
    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def prepare(explain: dict | None = None):
    """A migrated bench database with its user and model: (user, version, fitted model)."""
    migrated()
    user = bench_user()
    model_version, model = bench_model(user, explain)
    return user, model_version, model


def profile(top: int, size: int, calls: int, sort: str) -> None:
    user, _, model = prepare()
    from auditapp.accounts import roles
    from auditapp.accounts.services import create_api_token, revoke_api_token
    from auditapp.decisions.services import record_decisions

    token, _ = create_api_token(user, scopes=["ingest"], name="bench profile")
    try:
        payloads = Payloads(model, size * (calls + 1), secrets.token_hex(4))
        gc.freeze()
        warm = body_of(payloads.take(size))
        record_decisions(roles.Actor(user=user, token=token), json.loads(warm), ip="127.0.0.1")
        bodies = [body_of(payloads.take(size)) for _ in range(calls)]
        began = time.perf_counter()
        documents = [json.loads(body) for body in bodies]
        parse_s = time.perf_counter() - began
        profiler = cProfile.Profile()
        began = time.perf_counter()
        profiler.enable()
        for document in documents:
            record_decisions(roles.Actor(user=user, token=token), document, ip="127.0.0.1")
        profiler.disable()
        wall = time.perf_counter() - began
        print(
            f"record_decisions, {calls} call(s) of {size:,} decision(s): {wall:.3f} s under "
            f"cProfile (json.loads of the {sum(map(len, bodies)) / 1e6:.2f} MB of bodies, "
            f"not profiled: {parse_s:.3f} s)"
        )
        pstats.Stats(profiler).strip_dirs().sort_stats(sort).print_stats(top)
    finally:
        revoke_api_token(token)
        print(f"broker: purged {purge_broker()} task message(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", metavar="HOST:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="profile a 10,000 batch instead")
    parser.add_argument("--top", type=int, default=25, help="profile entries to print")
    parser.add_argument("--size", type=int, default=BIG, help="profiled batch size")
    parser.add_argument("--calls", type=int, default=1, help="profiled calls")
    parser.add_argument("--sort", default="cumulative", help="pstats sort key (e.g. tottime)")
    args = parser.parse_args()
    configure_env()
    if args.serve:
        setup_django()
        serve(args.serve)
        return
    if args.profile:
        profile(args.top, args.size, args.calls, args.sort)
        return
    run()


def run() -> None:
    started = time.perf_counter()
    user, model_version, model = prepare()
    from django.db import connection

    from auditapp.accounts import roles
    from auditapp.accounts.services import create_api_token, revoke_api_token
    from auditapp.decisions.models import Decision

    needed = (
        2 * (BATCH1_WARMUP + BATCH1_REQUESTS)
        + 100 * (BATCH100_WARMUP + BATCH100_REPS)
        + BIG * BATCH10K_REPS
    )
    payloads = Payloads(model, needed, secrets.token_hex(4))
    gc.freeze()  # the payload pool is not garbage; keep collections from walking it
    token, key = create_api_token(user, scopes=["ingest"], name="bench/ingest.py")
    server = raw = client = None
    try:
        raw = RawBaseline(model_version, user)
        raw_indexes = raw.indexes
        server = Server()
        startup = server.wait_ready()
        client = Client(server.port, key)

        # Batch 1: sequential requests over one keep-alive connection.
        http_singles(client, raw, payloads, BATCH1_WARMUP)
        singles, raw_single = http_singles(client, raw, payloads, BATCH1_REQUESTS)
        # The same work in-process, without HTTP, DRF or authentication.
        in_process = in_process_singles(
            lambda: roles.Actor(user=user, token=token), payloads, BATCH1_WARMUP, BATCH1_REQUESTS
        )
        # Batches of 100 and 10,000.
        http_batches(client, raw, payloads, 100, BATCH100_WARMUP)
        hundreds, raw_hundreds = http_batches(client, raw, payloads, 100, BATCH100_REPS)
        bigs, raw_bigs = http_batches(client, raw, payloads, BIG, BATCH10K_REPS)
        connections, requests = client.connections, client.requests
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.stop()
        if raw is not None:
            raw.drop()
        revoke_api_token(token)
        purged = purge_broker()

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    stored = Decision.objects.count()
    print()
    print(
        f"Attest ingestion benchmark — PostgreSQL {pg_version}, {connection.settings_dict['NAME']}"
        f" ({stored:,} decisions stored), Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, DEBUG={os.environ['DEBUG']}"
    )
    print(
        "HTTP: Django's threaded WSGI server (runserver's, with TCP_NODELAY), "
        f"ready in {startup:.1f} s; "
        f"{connections} keep-alive connection(s) for {requests} requests"
    )
    print(
        f"raw baseline: psycopg into {SCRATCH_TABLE} (LIKE the decisions table INCLUDING ALL, "
        f"{raw_indexes} indexes, same foreign keys): autocommit INSERT / one COPY per batch, "
        "interleaved with the POSTs of the same rows"
    )
    print()
    rows = [
        (
            f"batch 1, decisions/s ({BATCH1_REQUESTS} sequential POSTs)",
            fmt_rate(singles["rate"]),
            fmt_rate(raw_single["rate"]),
            share(singles["rate"], raw_single["rate"]),
        ),
        (
            "batch 1, p50 latency at the client",
            fmt_ms(singles["p50"]),
            fmt_ms(raw_single["p50"]),
            times(singles["p50"], raw_single["p50"]),
        ),
        (
            "batch 1, p95 latency at the client",
            fmt_ms(singles["p95"]),
            fmt_ms(raw_single["p95"]),
            times(singles["p95"], raw_single["p95"]),
        ),
        (
            "batch 1, p50 at the server (in Django)",
            fmt_ms(singles["server_p50"]),
            fmt_ms(raw_single["p50"]),
            times(singles["server_p50"], raw_single["p50"]),
        ),
        (
            "batch 1, p95 at the server (in Django)",
            fmt_ms(singles["server_p95"]),
            fmt_ms(raw_single["p95"]),
            times(singles["server_p95"], raw_single["p95"]),
        ),
        (
            "batch 1, p50 record_decisions in-process",
            fmt_ms(in_process["p50"]),
            fmt_ms(raw_single["p50"]),
            times(in_process["p50"], raw_single["p50"]),
        ),
        (
            f"batch 100, decisions/s (median of {BATCH100_REPS})",
            fmt_rate(hundreds["rate"]),
            fmt_rate(raw_hundreds["rate"]),
            share(hundreds["rate"], raw_hundreds["rate"]),
        ),
        (
            f"batch 10,000, decisions/s (median of {BATCH10K_REPS})",
            fmt_rate(bigs["rate"]),
            fmt_rate(raw_bigs["rate"]),
            share(bigs["rate"], raw_bigs["rate"]),
        ),
        (
            "batch 10,000, decisions/s at the server",
            fmt_rate(bigs["server_rate"]),
            fmt_rate(raw_bigs["rate"]),
            share(bigs["server_rate"], raw_bigs["rate"]),
        ),
    ]
    print_table(rows)
    print()
    print(
        f"spread: batch 100 {fmt_rate(hundreds['min'])}..{fmt_rate(hundreds['max'])} "
        f"(raw {fmt_rate(raw_hundreds['min'])}..{fmt_rate(raw_hundreds['max'])}); "
        f"batch 10,000 {fmt_rate(bigs['min'])}..{fmt_rate(bigs['max'])} "
        f"(raw {fmt_rate(raw_bigs['min'])}..{fmt_rate(raw_bigs['max'])}); "
        f"10,000 body {bigs['body_mb']:.1f} MB"
    )
    print()
    copy_share = bigs["rate"] / raw_bigs["rate"]
    print("targets:")
    print(
        f"  10,000-decision batch >= {TARGET_COPY_SHARE:.0%} of the raw COPY rate: "
        f"{copy_share:.0%} (over HTTP) — {'MET' if copy_share >= TARGET_COPY_SHARE else 'NOT MET'}"
    )
    print(
        f"  single-decision POST p50 <= {TARGET_P50_MS:.0f} ms at the server: "
        f"{singles['server_p50']:.2f} ms — "
        f"{'MET' if singles['server_p50'] <= TARGET_P50_MS else 'NOT MET'}"
    )
    print()
    print(
        f"cleanup: {SCRATCH_TABLE} dropped, server stopped, token revoked, "
        f"broker purged ({purged} task message(s)); {time.perf_counter() - started:.0f} s in all"
    )


if __name__ == "__main__":
    main()
