"""Counterfactuals per decision: which decisions get them, their work rows, the sweeper that
finds lost work, and a recomputation asked for.

The worker's batch (claim, search, store) is explain/counterfactual_batches.py: it loads
models, so only the task module imports it (Attest's start-up loads no ML library).

A decision gets counterfactuals when its prediction is the adverse outcome (the schema's
target says which) and its version's policy selects it (`explain.counterfactuals` at
registration: "all", the default; "sample", by the decision's content hash at
`counterfactual_sample_rate`; or "on_demand"). Its work row is written with the decision, in
the same transaction, and sent to the `explain-cf` queue once it commits; the sweeper
(`explain.sweep`) sends again whatever is still pending after a grace or whose worker died.

The seed is the decision's own (its content hash): a recomputation of the same version
reproduces the stored counterfactuals exactly.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from celery import current_app
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.decisions.erasure import refuse_erased
from auditapp.decisions.models import Decision
from auditapp.errors import Conflict
from auditapp.registry.models import ModelVersion
from auditapp.sqlarrays import id_array
from explain.leases import LEASE, PENDING_GRACE, UNSENT_GRACE
from explain.models import CounterfactualWork
from explain.publishing import queues_empty, send_soon

log = logging.getLogger(__name__)

TASK = "explain.counterfactuals"
QUEUE = "explain-cf"
BATCH = 8  # decisions per task: ~0.1-2 s each, well inside the lease and time limits
MAX_ATTEMPTS = 3


# -- which decisions ---------------------------------------------------------------------------
def is_adverse(model_version: ModelVersion, prediction: Any) -> bool:
    """Whether a prediction is the version's adverse outcome, with a favourable class to
    reach (a regression, or several classes without a declared favourable one: never)."""
    target = model_version.parsed_schema.target
    return target.favourable_class is not None and target.is_adverse(prediction) is True


def wanted(model_version: ModelVersion, decision_hash: str, prediction: Any) -> bool:
    """Whether a new decision gets counterfactuals computed by default."""
    if not is_adverse(model_version, prediction):
        return False
    chosen = model_version.counterfactual_policy
    if chosen["mode"] == "all":
        return True
    if chosen["mode"] == "sample":
        # Sampled by content hash, as LIME is: reproducible, independent of arrival order.
        return int(decision_hash[:8], 16) / 0xFFFFFFFF < chosen["sample_rate"]
    return False


def seed_for(content_hash: str) -> int:
    """The decision's own seed (60 bits of its content hash): recomputing reproduces it."""
    return int(content_hash[:15], 16)


# -- work rows and sending ---------------------------------------------------------------------
def add_pending(
    decisions: Iterable[tuple[int, ModelVersion, str]], predictions: Iterable[Any], now: datetime
) -> dict[int, list[int]]:
    """Pending work rows of the new decisions that get counterfactuals, in the caller's
    transaction, sent once it commits. Returns their ids by model version."""
    pending: dict[int, list[int]] = defaultdict(list)
    for (decision_id, model_version, decision_hash), prediction in zip(
        decisions, predictions, strict=True
    ):
        if wanted(model_version, decision_hash, prediction):
            pending[model_version.pk].append(decision_id)
    if not pending:
        return {}
    ids = [i for found in pending.values() for i in found]
    if connection.vendor == "postgresql":
        # One statement, the ids as an array parameter: the ORM's bulk_create of a
        # 1,000-decision batch's ~400 rows took 28 ms.
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {CounterfactualWork._meta.db_table} "
                "(decision_id, status, attempts, error, created_at, updated_at) "
                "SELECT unnest(%s::bigint[]), %s, 0, '', %s, %s",
                [id_array(ids), CounterfactualWork.PENDING, now, now],
            )
    else:
        CounterfactualWork.objects.bulk_create(
            CounterfactualWork(decision_id=i, created_at=now, updated_at=now) for i in ids
        )
    pending = dict(pending)
    transaction.on_commit(lambda: send_soon(lambda: send(pending)), robust=True)
    return pending


def send(pending: dict[int, list[int]]) -> int:
    """Send decision ids to the `explain-cf` queue in batches of one version; the task count.
    What the broker refuses stays pending: the sweeper sends it again."""
    sent = 0
    with current_app.producer_or_acquire() as producer:
        for model_version_id, ids in pending.items():
            for start in range(0, len(ids), BATCH):
                batch = ids[start : start + BATCH]
                current_app.send_task(
                    TASK,
                    args=(model_version_id, batch),
                    queue=QUEUE,
                    producer=producer,
                    argsrepr=f"({model_version_id}, <{len(batch)} decision ids>)",
                )
                sent += 1
    return sent


def _send_logged(pending: dict[int, list[int]]) -> None:
    try:
        send(pending)
    except Exception:
        log.exception("explain.cf.enqueue.failed")


# -- the sweeper -------------------------------------------------------------------------------
def sweep(now: datetime | None = None, limit: int = 5000) -> int:
    """Send again the work lost: running rows whose worker died (lease expired), pending
    rows nobody will send (after UNSENT_GRACE when the queue is empty, else
    PENDING_GRACE). Rows sent are touched: sent again only once stale again."""
    now = now or timezone.now()
    grace = UNSENT_GRACE if queues_empty((QUEUE,)) else PENDING_GRACE
    stale = Q(status=CounterfactualWork.RUNNING, updated_at__lt=now - LEASE) | Q(
        status=CounterfactualWork.PENDING, updated_at__lt=now - grace
    )
    with transaction.atomic():
        rows = list(
            CounterfactualWork.objects.filter(stale)
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("id", "decision__model_version_id", "decision_id")[:limit]
        )
        CounterfactualWork.objects.filter(pk__in=[r[0] for r in rows]).update(
            status=CounterfactualWork.PENDING, updated_at=now
        )
    pending: dict[int, list[int]] = defaultdict(list)
    for _, model_version_id, decision_id in rows:
        pending[model_version_id].append(decision_id)
    if pending:
        _send_logged(dict(pending))
        log.info("explain.cf.sweep.resent n=%d", len(rows))
    return len(rows)


# -- asked for ---------------------------------------------------------------------------------
@transaction.atomic
def request_counterfactuals(actor: roles.Actor, decision: Decision, *, ip=None) -> str:
    """Compute a decision's counterfactuals again (same seed: it reproduces the stored ones
    unless the version's pipeline or libraries changed); audited. Only an adverse decision
    has any."""
    actor.require(roles.REQUEST_EXPLANATIONS)
    refuse_erased(decision, "its counterfactuals")
    if not is_adverse(decision.model_version, decision.prediction):
        raise Conflict(
            "Only a decision with the adverse outcome has counterfactuals: this one is "
            "already favourable, or its schema names no favourable class.",
            code="not_adverse",
        )
    now = timezone.now()
    work, created = CounterfactualWork.objects.select_for_update().get_or_create(
        decision=decision,
        defaults={"created_at": now, "updated_at": now, "requested_by": actor.user},
    )
    if not created:
        work.status, work.attempts, work.updated_at, work.requested_by = (
            CounterfactualWork.PENDING,
            0,
            now,
            actor.user,
        )
        work.save(update_fields=["status", "attempts", "updated_at", "requested_by"])
    record_event("decision.counterfactuals_requested", actor=actor, target=decision, ip=ip)
    pending = {decision.model_version_id: [decision.pk]}
    transaction.on_commit(lambda: _send_logged(pending), robust=True)
    return work.status
