"""Celery tasks for explanations and counterfactuals: thin wrappers that take ids and call
batches / leases / counterfactual_work.

The only explain/ module that knows Celery tasks; tasks are sent by name
(publishing.py), so nothing imports this one but the worker and the tests.
"""

from __future__ import annotations

import gc

from celery import shared_task
from celery.signals import worker_init
from django.conf import settings
from django.db import close_old_connections, connection

from auditapp.tasking import AttestTask
from explain import batches, counterfactual_batches, counterfactual_work, leases, publishing
from explain.backends import MODULES, backend

# Settings, "Recovery: leases, time limits, queues", say why these values and this order.
SOFT_TIME_LIMIT = settings.ATTEST_EXPLAIN_SOFT_TIME_LIMIT
HARD_TIME_LIMIT = settings.ATTEST_EXPLAIN_TIME_LIMIT
MAX_RETRIES = 5


@worker_init.connect
def load_the_explainers(sender, **_) -> None:
    """shap, lime and scikit-learn loaded once in the main process of a worker that explains,
    before its pool forks: the children share them and none pays seconds on its first task.
    A worker of other queues alone (reports, monitoring, verification) starts without them,
    with a fifth less CPU (2.1 s instead of 2.7 to be ready); a task that needs them there
    loads them itself.

    Then what is loaded is frozen out of the garbage collector (gc.freeze, as Python's
    documentation advises before a fork): no collection walks it again, so a child's
    collections do not touch (and copy) the pages it shares, and the worker's exit does not
    spend seconds collecting it (an idle worker's start and stop, 3.2 s of CPU, took 2.5)."""
    if set(sender.app.amqp.queues.consume_from) & set(publishing.EXPLAIN_QUEUES):
        for method in MODULES:
            backend(method)
    gc.freeze()


# A batch of work rows: acknowledged once done, sent again if its worker dies, retried
# with jittered backoff (after an outage every worker's batches retry at once otherwise).
BATCH_TASK = {
    "base": AttestTask,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "soft_time_limit": SOFT_TIME_LIMIT,
    "time_limit": HARD_TIME_LIMIT,
    "max_retries": MAX_RETRIES,
    "retry_backoff": 1,
    "retry_backoff_max": 120,
    "retry_jitter": True,
}


def _fresh_connection() -> None:
    """Workers keep their connection between tasks (settings: CELERY_DB_REUSE_MAX); one
    that broke or outlived CONN_MAX_AGE is replaced here, as a request would (never inside
    a caller's transaction, e.g. a test calling the task directly)."""
    if not connection.in_atomic_block:
        close_old_connections()


@shared_task(name="explain.batch", **BATCH_TASK)
def explain_batch(
    model_version_id: int, method: str, decision_ids: list[int], new_seed: bool = False
) -> dict:
    """No failure record: the rows of a batch that gives up stay pending or running, and
    the sweeper sends them again (leases.py); the claim counts and caps their attempts."""
    _fresh_connection()
    return batches.run_batch(model_version_id, method, decision_ids, new_seed=new_seed)


@shared_task(
    base=AttestTask,
    name="explain.sweep",
    acks_late=True,
    soft_time_limit=120,
    time_limit=150,
    max_retries=0,  # beat sends it again
)
def sweep_pending() -> int:
    return leases.sweep() + counterfactual_work.sweep()


@shared_task(name="explain.counterfactuals", **BATCH_TASK)
def counterfactual_batch(model_version_id: int, decision_ids: list[int]) -> dict:
    """Counterfactuals of a batch of adverse decisions (queue `explain-cf`). No failure
    record: rows of a batch that gives up stay pending or running for the sweeper; the
    claim caps their attempts."""
    _fresh_connection()
    return counterfactual_batches.run_batch(model_version_id, decision_ids)
