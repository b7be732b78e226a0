"""End to end with a real Celery worker process on the configured broker.

Ingestion commits decisions and enqueues explanation batches; a worker (a
separate process, on the same database and broker) explains them. Tests wait
on a condition (every explanation finished), never for a fixed time.
"""

from __future__ import annotations

import os
import signal

import pytest
from django.conf import settings
from django.utils import timezone
from kombu import pools

from auditapp.celery import app as celery_app
from auditapp.decisions.models import Decision
from explain import explainers, leases, publishing
from explain.models import Explanation
from tests.factories import DecisionPayloadFactory
from tests.workers import Worker, unfinished, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fast_lime(model_version):
    """Explanations are the subject here, not LIME's precision: fewer samples per row."""
    explainers._contexts.clear()
    yield


def test_every_ingested_decision_gets_shap_and_lime_from_a_real_worker(
    worker, model_version, ingest
):
    results = ingest(*DecisionPayloadFactory.build_batch(30))

    wait_until(lambda: unfinished() == 0, "30 decisions to be explained")

    explanations = Explanation.objects.filter(decision_id__in=[r["id"] for r in results])
    assert explanations.count() == 60
    assert set(explanations.values_list("status", flat=True)) == {Explanation.DONE}
    shap_rows = explanations.filter(method="shap")
    assert all(e.quality["additivity_ok"] for e in shap_rows)
    assert all("agreement_with_shap" in e.quality for e in explanations.filter(method="lime"))
    # Loaded before the pool forked (explain.tasks.load_the_explainers), not in each child.
    assert worker.has_mapped("shap/_cext")


def test_a_worker_killed_mid_batch_leaves_every_decision_explained_once(
    worker, model_version, ingest
):
    results = ingest(*DecisionPayloadFactory.build_batch(40))
    wait_until(
        lambda: Explanation.objects.filter(method="lime", status=Explanation.RUNNING).exists(),
        "a LIME batch to start",
    )
    (child,) = worker.children()
    os.kill(child, signal.SIGKILL)

    wait_until(lambda: unfinished() == 0, "the killed batch to be redone")

    decision_ids = [r["id"] for r in results]
    explanations = Explanation.objects.filter(decision_id__in=decision_ids)
    assert explanations.count() == 80  # one per decision and method: nothing twice
    assert set(explanations.values_list("status", flat=True)) == {Explanation.DONE}
    # The killed batch was attempted twice; the attempt count is in the database.
    assert explanations.filter(method="lime", attempts=2).exists()
    assert "WorkerLostError" in worker.log.read_text() or "SIGKILL" in worker.log.read_text()


def use_broker(url: str) -> None:
    """Point this process's Celery app at another broker (its connection pools are rebuilt)."""
    celery_app.conf.broker_url = url
    pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.mark.skipif(
    not settings.CELERY_BROKER_URL.startswith("redis://"),
    reason="simulates a Redis outage (the filesystem broker cannot be unreachable)",
)
def test_decisions_are_stored_while_the_broker_is_down_and_the_sweeper_catches_up(
    model_version, ingest, media_root, tmp_path
):
    good_url = celery_app.conf.broker_url
    celery_app.control.purge()
    use_broker("redis://127.0.0.1:9/0")  # nothing listens on port 9
    try:
        results = ingest(*DecisionPayloadFactory.build_batch(10))
        publishing.wait_until_published()  # tried, and failed, against the dead broker
    finally:
        use_broker(good_url)

    assert [r["status"] for r in results] == ["created"] * 10
    assert Decision.objects.count() == 10
    assert unfinished() == 20  # pending: nothing reached a worker

    worker = Worker(media_root, tmp_path / "worker.log")
    try:
        later = timezone.now() + leases.PENDING_GRACE * 2
        assert leases.sweep(now=later) == 20  # what beat runs every minute
        wait_until(lambda: unfinished() == 0, "the sweeper's batches to be explained")
    finally:
        worker.stop()
        celery_app.control.purge()
    assert Explanation.objects.filter(status=Explanation.DONE).count() == 20
