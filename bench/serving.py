"""Serving benchmark: a web process's first predict (cold) against the next ones (warm).

Run with `.venv/bin/python bench/serving.py`. Not a test: it prints what a new web
process pays on its first prediction and what each one costs once the model is warm,
beside the raw pipeline's own predict and predict_proba on the same row.

1. DATABASE_URL (default postgres://postgres@127.0.0.1:5432/attest_bench_serving) is
   created if missing and migrated; the demo credit model (one-hot + gradient boosting,
   120 trees: bench/ingest.py's) is registered and a traffic policy puts it in production.
2. A fresh Python process (as a new gunicorn worker is) sets Django up, then sends
   POST /api/v1/models/credit/predict through Django's test client (URL routing, the
   role check, the policy, the schema check, the model, the recording with its audit
   event and explanation rows, JSON; no socket): the first call is the cold start (the
   site's URLs, scikit-learn and skops imported, the artifact read, its sha256 checked,
   the model loaded), then REPS warm calls, each a new request_id; p50 and p95.
3. Baseline in the same process, on the same rows: the fitted pipeline's predict and
   predict_proba on a one-row frame, nothing else.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/attest_bench_serving"
REPS = 200


def configure() -> None:
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_SERVING_DATABASE_URL", DEFAULT_DATABASE_URL)
    from bench import ingest

    ingest.configure_env()


def prepare() -> None:
    """The database, the model, and a policy that serves it (the parent process)."""
    configure()
    from bench import ingest

    user, model_version, _ = ingest.prepare()
    from auditapp.accounts import roles
    from auditapp.serving.services import change_traffic

    change_traffic(roles.Actor(user=user), model_version.registered_model, {"production": "1"})


def measure() -> None:
    """A fresh process: its first predict, then REPS more (the child process)."""
    began = time.perf_counter()
    configure()
    from bench import ingest

    ingest.setup_django()
    from rest_framework.test import APIClient

    from auditapp.demo import credit

    rows = credit.applicants(REPS + 1, seed=5)[credit.FEATURES]
    records = rows.to_dict("records")
    client = APIClient(HTTP_HOST="localhost")
    client.force_authenticate(ingest.bench_user())
    setup_s = time.perf_counter() - began
    run = uuid.uuid4().hex[:8]

    def predict(n: int) -> float:
        body = {"inputs": _plain(records[n]), "request_id": f"bench-{run}-{n}"}
        started = time.perf_counter()
        response = client.post("/api/v1/models/credit/predict", body, format="json")
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.content
        return elapsed * 1000

    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cold_ms = predict(0)
    after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    warm = sorted(predict(n) for n in range(1, REPS + 1))

    from auditapp.registry.models import ModelVersion
    from auditapp.registry.services import load_model

    pipeline = load_model(ModelVersion.objects.get(registered_model__name="credit", version="1"))
    raw = []
    for n in range(1, REPS + 1):
        started = time.perf_counter()
        frame = rows.iloc[n : n + 1]
        pipeline.predict(frame)
        pipeline.predict_proba(frame)
        raw.append((time.perf_counter() - started) * 1000)
    raw.sort()
    print(f"process set-up (Django, no request yet): {setup_s * 1000:8.1f} ms")
    print(f"first predict (cold start):               {cold_ms:8.1f} ms")
    print(
        f"peak memory: {before_kb / 1024:.0f} MB before it, {after_kb / 1024:.0f} MB after "
        "(the libraries and the model it loaded)"
    )
    print(f"warm predict, {REPS} calls: p50 {_p(warm, 50):.1f} ms, p95 {_p(warm, 95):.1f} ms")
    print(f"raw predict + predict_proba: p50 {_p(raw, 50):.1f} ms, p95 {_p(raw, 95):.1f} ms")
    print(f"cold start costs {cold_ms - statistics.median(warm):.0f} ms over a warm predict")


def _plain(record: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}


def _p(values: list[float], q: int) -> float:
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def main() -> None:
    if "--child" in sys.argv:
        measure()
        return
    prepare()
    from bench import ingest

    subprocess.run([sys.executable, __file__, "--child"], check=True, env=os.environ.copy())
    print(f"broker: purged {ingest.purge_broker()} task message(s)")


if __name__ == "__main__":
    main()
