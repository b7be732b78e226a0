"""Blue/green: switching production while predictions run. Every request is answered, by
exactly one version, and what it was told is what was recorded (PostgreSQL: concurrent
writers on real connections)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from auditapp.decisions.models import PRODUCTION, Decision
from auditapp.serving.models import TrafficPolicy
from tests.serving.helpers import expected, instance, predict_url, put_policy, traffic_url

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="concurrent writers: PostgreSQL",
    ),
]

REQUESTS = 160
SWITCHES = 12


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


def test_switching_production_under_load_fails_no_request_and_mixes_no_versions(
    admin, ml_engineer, versions, pipelines
):
    put_policy(client_for(admin), production="1")
    switching = threading.Event()

    def predict(n: int) -> tuple[int, dict]:
        try:
            response = client_for(ml_engineer).post(predict_url(), instance(n), format="json")
            return response.status_code, response.json()
        finally:
            connection.close()

    def switch() -> list[int]:
        statuses = []
        try:
            switching.wait()
            for k in range(SWITCHES):
                target = "2" if k % 2 == 0 else "1"
                response = client_for(admin).put(
                    traffic_url(), {"production": target}, format="json"
                )
                statuses.append(response.status_code)
        finally:
            connection.close()
        return statuses

    with ThreadPoolExecutor(max_workers=5) as pool:
        switcher = pool.submit(switch)
        futures = []
        for n in range(REQUESTS):
            futures.append(pool.submit(predict, n))
            if n == 10:
                switching.set()
        answers = [f.result() for f in futures]
        switch_statuses = switcher.result()

    assert switch_statuses == [200] * SWITCHES
    assert TrafficPolicy.objects.count() == SWITCHES + 1
    assert [status for status, _ in answers] == [200] * REQUESTS, [
        body for status, body in answers if status != 200
    ]
    told = {body["decision_id"]: (n, body) for n, (_, body) in enumerate(answers)}
    stored = Decision.objects.in_bulk(list(told)).values()
    assert len(stored) == REQUESTS
    used = set()
    for decision in stored:
        n, body = told[decision.pk]
        version = decision.model_version.version
        used.add(version)
        assert (body["version"], body["arm"], decision.arm) == (version, PRODUCTION, PRODUCTION)
        prediction, score = expected(pipelines[version], instance(n)["inputs"])
        assert (body["prediction"], decision.prediction) == (prediction, prediction)
        assert body["score"] == decision.score == pytest.approx(score, abs=1e-12)
    assert used == {"1", "2"}  # the switch happened during the load, both versions answered

    # After the last switch (to "1"), every new request goes to it.
    after = client_for(ml_engineer).post(predict_url(), instance(REQUESTS), format="json")
    assert after.json()["version"] == "1"
