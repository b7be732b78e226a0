"""Sending explanation work to the broker: batches by task name, and a publisher thread.

enqueue_batches sends at once through one producer (the sweeper, a priority
request); enqueue_soon hands the batches to a publisher thread, off the request
path. What the broker refuses is marked NOT_SENT for the next sweep (leases.py).
Tasks are sent by name and queue: this module does not import tasks.py.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connections
from django.utils import timezone

from auditapp.tasking import TRANSIENT_ERRORS
from explain.models import Explanation

log = logging.getLogger(__name__)

TASK = "explain.batch"
QUEUE_FOR_METHOD = {"shap": "explain", "lime": "explain-lime"}
PER_ROW_QUEUE = "explain-lime"
PRIORITY_QUEUE = "explain-priority"
# LIME takes ~0.1 s a row: tasks of a few seconds, so that a worker serving
# every queue (the quick start) turns to waiting SHAP batches often.
LIME_BATCH = 25
# The queues explanation tasks wait in; the sweeper's own is `maintenance`.
EXPLAIN_QUEUES = ("explain", "explain-lime", "explain-priority")
# The work-state time of a pending row whose task could not be sent (the broker was
# down): older than any grace, so the next sweep sends it whatever waits in the broker.
NOT_SENT = datetime(1970, 1, 1, tzinfo=UTC)


def enqueue_batches(
    pending: dict[tuple[int, str], Iterable[int]], *, priority: bool = False, new_seed: bool = False
) -> int:
    """Send decision ids in batches of one model version and method; return the task count.

    All messages go through one producer (one broker connection): a 10,000
    decision request is about 80 messages, not a connection per message.
    When the broker fails, NotSent names the batches that were not sent.
    """
    batches = [
        (model_version_id, method, batch)
        for (model_version_id, method), decision_ids in pending.items()
        for batch in _chunks(list(decision_ids), _batch_size(method))
    ]
    sent = 0
    try:
        with current_app.producer_or_acquire() as producer:
            for model_version_id, method, batch in batches:
                queue = PRIORITY_QUEUE if priority else QUEUE_FOR_METHOD[method]
                _send(producer, model_version_id, method, batch, queue=queue, new_seed=new_seed)
                sent += 1
    except Exception as exc:
        raise NotSent(batches[sent:]) from exc
    return sent


class NotSent(Exception):
    """The broker failed: these (model version, method, decision ids) batches were not sent."""

    def __init__(self, batches: list[tuple[int, str, list[int]]]):
        super().__init__(f"{len(batches)} explanation batches not sent")
        self.batches = batches


def _batch_size(method: str) -> int:
    return settings.ATTEST_EXPLAIN_BATCH_SIZE if method == "shap" else LIME_BATCH


def _chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def send_in_batches(
    producer, model_version_id: int, method: str, ids: list[int], *, size, queue, new_seed
) -> int:
    """Send one version's ids for one method as tasks of `size` on `queue`; the task count."""
    batches = _chunks(ids, size)
    for batch in batches:
        _send(producer, model_version_id, method, batch, queue=queue, new_seed=new_seed)
    return len(batches)


def _send(producer, model_version_id: int, method: str, batch: list[int], *, queue, new_seed):
    current_app.send_task(
        TASK,
        args=(model_version_id, method, batch),
        kwargs={"new_seed": new_seed},
        queue=queue,
        producer=producer,
        # Celery would otherwise repr() every id list for its logs.
        argsrepr=f"({model_version_id}, {method!r}, <{len(batch)} decision ids>)",
    )


def mark_not_sent(batches: list[tuple[int, str, list[int]]], before: datetime) -> int:
    """Mark the pending rows of batches that could not be sent, for the next sweep; how many.

    Only rows nobody touched since `before` (the time they were handed over): a row a
    sweep has sent again since, or a worker has claimed, is not marked.
    """
    ids_by_method: dict[str, list[int]] = defaultdict(list)
    for _, method, batch in batches:
        ids_by_method[method].extend(batch)
    return sum(
        Explanation.objects.filter(
            decision_id__in=ids,
            method=method,
            status=Explanation.PENDING,
            updated_at__lte=before,
        ).update(updated_at=NOT_SENT)
        for method, ids in ids_by_method.items()
    )


# -- publishing off the request path ------------------------------------------------------
# A client recording decisions should not wait for the broker: the ids go to a
# publisher thread of this process. If the broker is down, the publisher marks the
# rows NOT_SENT and the next sweep sends them; if the process dies before they are
# sent, they stay pending and the sweeper sends them after its grace.

_outbox: queue.Queue = queue.Queue()
_publisher: threading.Thread | None = None
_publisher_lock = threading.Lock()


# What is handed over within this many seconds of the first is sent together: a busy process
# sends a few messages for many requests, where it sent one or two a request (a message
# costs about a millisecond of this process's CPU, taken from the requests it serves).
LINGER = 0.025


def _publish_forever() -> None:
    while True:
        handed = [_outbox.get()]
        deadline = time.monotonic() + LINGER
        while (left := deadline - time.monotonic()) > 0:
            try:
                handed.append(_outbox.get(timeout=left))
            except queue.Empty:
                break
        try:
            _publish_handed(handed)
        finally:
            for _ in handed:
                _outbox.task_done()


def _publish_handed(handed: list[tuple[datetime, Any]]) -> None:
    """Other work's own sending functions in turn; the explanation batches merged by
    version and method, and sent at once."""
    merged: dict[tuple[int, str], list[int]] = defaultdict(list)
    latest = None
    for handed_at, pending in handed:
        if callable(pending):  # other work's own sending (counterfactuals, shadows)
            try:
                pending()
            except Exception:
                log.exception("explain.enqueue.failed")
            continue
        for key, ids in pending.items():
            merged[key].extend(ids)
        latest = handed_at if latest is None else max(latest, handed_at)
    if latest is not None:
        _publish(latest, dict(merged))


def _publish(handed_at: datetime, pending) -> None:
    """Send; what the broker refused is marked, so that the next sweep sends it at once."""
    try:
        enqueue_batches(pending)
    except NotSent as failure:
        log.warning("explain.enqueue.failed batches=%d", len(failure.batches), exc_info=True)
        try:
            marked = mark_not_sent(failure.batches, handed_at)
            log.info("explain.enqueue.marked_not_sent n=%d", marked)
        except TRANSIENT_ERRORS:  # the database too: the sweep's grace finds them
            log.exception("explain.enqueue.mark_failed")
        finally:
            connections.close_all()  # this thread's own, seldom used
    except Exception:
        log.exception("explain.enqueue.failed batches=%d", len(pending))


def enqueue_soon(pending: dict[tuple[int, str], Iterable[int]]) -> None:
    """Hand batches to this process's publisher thread (started on first use, after a fork)."""
    _start_publisher()
    _outbox.put((timezone.now(), pending))


def send_soon(send: Callable[[], None]) -> None:
    """Hand a sending function to the publisher thread (it logs what fails: the sweeper
    finds what was not sent)."""
    _start_publisher()
    _outbox.put((timezone.now(), send))


def _start_publisher() -> None:
    global _publisher
    with _publisher_lock:
        if _publisher is None or not _publisher.is_alive():
            _publisher = threading.Thread(target=_publish_forever, name="explain-publisher")
            _publisher.daemon = True
            _publisher.start()
            # Commands (import_decisions, load_demo) exit right after recording:
            # send what is queued first.
            atexit.register(wait_until_published)


def wait_until_published() -> None:
    """Block until everything handed to enqueue_soon has been sent (or marked not sent)."""
    _outbox.join()


def explain_queues_empty() -> bool:
    """No explanation task waits in the broker (a task a worker holds is not counted)."""
    return queues_empty(EXPLAIN_QUEUES)


def queues_empty(names) -> bool:
    """No task waits in these queues of the broker (a task a worker holds is not counted)."""
    with current_app.connection_for_read() as broker:
        for name in names:
            with broker.channel() as channel:
                try:
                    if channel.queue_declare(queue=name, passive=True).message_count:
                        return False
                except broker.channel_errors:  # Redis keeps no key for an empty queue
                    continue
    return True
