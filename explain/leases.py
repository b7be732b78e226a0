"""Leases on claimed rows, and the sweeper that returns lost work to the queue.

A claimed (running) row is its worker's while the worker renews its lease (updated_at)
every HEARTBEAT seconds. A worker that dies, or is killed at the hard time limit,
stops renewing; the sweeper then returns its rows to the queue.
Settings, "Recovery: leases, time limits, queues", say why these values and this order.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from auditapp.tasking import TRANSIENT_ERRORS
from explain.models import Explanation
from explain.publishing import NotSent, enqueue_batches, explain_queues_empty, mark_not_sent

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=settings.ATTEST_EXPLAIN_LEASE)
HEARTBEAT = settings.ATTEST_EXPLAIN_HEARTBEAT
UNSENT_GRACE = timedelta(seconds=settings.ATTEST_UNSENT_GRACE)
PENDING_GRACE = timedelta(seconds=settings.ATTEST_PENDING_GRACE)


@contextmanager
def lease_kept(explanation_ids: list[int], every: float = HEARTBEAT):
    """Renew the lease on these claimed rows every `every` seconds until the block ends.

    A thread with a connection of its own: the batch is one long call into the engine
    and cannot stop to renew it. Stopped before the results are stored, so that the
    renewal never waits on the store's row locks (nor the store on its).
    """
    stop = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(explanation_ids, every, stop), name="explain-lease", daemon=True
    )
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()


def _renew(explanation_ids: list[int], every: float, stop: threading.Event) -> None:
    try:
        while not stop.wait(every):
            try:
                Explanation.objects.filter(
                    pk__in=explanation_ids, status=Explanation.RUNNING
                ).update(updated_at=timezone.now())
            except TRANSIENT_ERRORS:  # the database is away: try again at the next beat
                log.warning("explain.lease.renew_failed n=%d", len(explanation_ids))
                connection.close()
    finally:
        connections.close_all()  # this thread's own connection


def sweep(now=None, limit: int = 20_000) -> int:
    """Return lost explanations to the queue; how many were sent.

    Lost are running rows whose lease expired (their worker died), and pending rows
    nobody will send. Rows the publisher could not send (the broker was down) are
    marked NOT_SENT, older than any grace: sent at once. Others may have been lost
    by the broker (a restart without persistence) or by a recording process that
    died first: a row still pending UNSENT_GRACE after it was recorded, when no
    explanation task waits in the broker, cannot be on its way; while tasks wait it
    may be among them, so it waits PENDING_GRACE. Rows sent are set pending and
    touched: sent again only once stale again; those the broker refuses are marked
    NOT_SENT again.
    """
    now = now or timezone.now()
    grace = UNSENT_GRACE if explain_queues_empty() else PENDING_GRACE
    stale = Q(status=Explanation.RUNNING, updated_at__lt=now - LEASE) | Q(
        status=Explanation.PENDING, updated_at__lt=now - grace
    )
    with transaction.atomic():
        rows = list(
            Explanation.objects.filter(stale)
            # A row being claimed or renewed right now is not lost.
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("id", "decision__model_version_id", "method", "decision_id")[:limit]
        )
        Explanation.objects.filter(pk__in=[row[0] for row in rows]).update(
            status=Explanation.PENDING, updated_at=now
        )
    pending: dict[tuple[int, str], list[int]] = defaultdict(list)
    for _, model_version_id, method, decision_id in rows:
        pending[(model_version_id, method)].append(decision_id)
    if not pending:
        return 0
    try:
        enqueue_batches(pending)
    except NotSent as failure:
        mark_not_sent(failure.batches, now)
        log.warning("explain.sweep.not_sent batches=%d", len(failure.batches), exc_info=True)
        return len(rows) - sum(len(batch) for _, _, batch in failure.batches)
    log.info("explain.sweep.resent n=%d", len(rows))
    return len(rows)
