"""Locust users for bench/serve.py: each sends single predictions of the demo credit model.

Run by bench/serve.py (`locust -f bench/serve_locust.py --headless ...`), configured through
the environment it sets: BENCH_SERVE_ROWS (a JSON file of input rows), BENCH_SERVE_TOKEN,
BENCH_SERVE_TAG (request_id prefix), BENCH_SERVE_USER_RATE (requests/s per user; 0 = as
fast as answers come), BENCH_SERVE_SERVER_MS (where the server-side times are written,
from the X-Bench-Server-Ms header, when the run stops).
"""

from __future__ import annotations

import itertools
import json
import os

from locust import FastHttpUser, constant, constant_throughput, events, task

ROWS = json.loads(open(os.environ["BENCH_SERVE_ROWS"]).read())  # noqa: SIM115 - read once
HEADERS = {"Authorization": f"Token {os.environ['BENCH_SERVE_TOKEN']}"}
TAG = os.environ["BENCH_SERVE_TAG"]
RATE = float(os.environ.get("BENCH_SERVE_USER_RATE", "0"))
MODEL = os.environ.get("BENCH_SERVE_MODEL", "credit")
SUBJECTS = 5_000  # distinct applicants: canary assignment is sticky per subject

SERVER_MS: list[float] = []
ANSWERED: list[str] = []  # request_ids answered 2xx
ARMS: dict[str, int] = {}
numbers = itertools.count()


class Predictor(FastHttpUser):
    wait_time = constant_throughput(RATE) if RATE else constant(0)

    @task
    def predict(self) -> None:
        n = next(numbers)
        body = {
            "inputs": ROWS[n % len(ROWS)],
            "request_id": f"{TAG}-{n:07d}",
            "subject_ref": f"subject-{n % SUBJECTS:05d}",
        }
        with self.client.post(
            f"/api/v1/models/{MODEL}/predict",
            json=body,
            headers=HEADERS,
            name="predict",
            catch_response=True,
        ) as response:
            if not 200 <= response.status_code < 300:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            SERVER_MS.append(float(response.headers.get("X-Bench-Server-Ms", "nan")))
            ANSWERED.append(body["request_id"])
            arm = response.json().get("arm", "?")
            ARMS[arm] = ARMS.get(arm, 0) + 1


@events.test_stop.add_listener
def write_server_times(environment, **_kwargs) -> None:
    with open(os.environ["BENCH_SERVE_SERVER_MS"], "w") as handle:
        json.dump({"server_ms": SERVER_MS, "arms": ARMS, "answered": ANSWERED}, handle)
