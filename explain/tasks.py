"""Celery tasks for explanations: thin wrappers that take ids and write results."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import shared_task
from django.conf import settings

log = logging.getLogger(__name__)

QUEUE_FOR_METHOD = {"shap": "explain", "lime": "explain-lime"}
PRIORITY_QUEUE = "explain-priority"


def enqueue_batches(
    pending: dict[tuple[int, str], Iterable[int]], *, priority: bool = False
) -> int:
    """Send decision ids in batches of one model version and method; return the task count."""
    size = settings.ATTEST_EXPLAIN_BATCH_SIZE
    sent = 0
    for (model_version_id, method), decision_ids in pending.items():
        ids = list(decision_ids)
        queue = PRIORITY_QUEUE if priority else QUEUE_FOR_METHOD[method]
        for start in range(0, len(ids), size):
            explain_batch.apply_async(
                args=(model_version_id, method, ids[start : start + size]), queue=queue
            )
            sent += 1
    return sent


@shared_task(
    name="explain.batch",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=600,
    time_limit=660,
)
def explain_batch(model_version_id: int, method: str, decision_ids: list[int]) -> None:
    """Explain a batch of decisions of one model version (the engine arrives with issue 3)."""
    log.info(
        "explain.batch.received model_version=%s method=%s n=%d",
        model_version_id,
        method,
        len(decision_ids),
    )
