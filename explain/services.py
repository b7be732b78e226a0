"""Explanation work asked for: pending rows for decisions just recorded, and a reviewer's
request to compute a decision's explanations again."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.decisions.erasure import refuse_erased
from auditapp.decisions.models import Decision
from auditapp.errors import InvalidInput
from auditapp.registry.models import ModelVersion
from auditapp.sqlarrays import id_array
from explain.models import Explanation
from explain.publishing import enqueue_batches, enqueue_soon

log = logging.getLogger(__name__)

Pending = dict[tuple[int, str], list[int]]


def methods_for(model_version: ModelVersion, decision_hash: str) -> list[str]:
    """Explanation methods computed by default for a new decision of this version."""
    methods = ["shap"]
    if (
        model_version.lime_mode == "all"
        or (
            model_version.lime_mode == "sample"
            # Sampled by content hash: reproducible, and independent of arrival order.
            and int(decision_hash[:8], 16) / 0xFFFFFFFF < model_version.lime_sample_rate
        )
    ):
        methods.append("lime")
    return methods


def add_pending_explanations(
    decisions: Iterable[tuple[int, ModelVersion, str]], now: datetime
) -> Pending:
    """Pending work rows for new decisions (id, version, content hash), in the caller's
    transaction, and their sending once it commits. Returns them by (version, method)."""
    pending: Pending = defaultdict(list)
    for decision_id, model_version, decision_hash in decisions:
        for method in methods_for(model_version, decision_hash):
            pending[(model_version.pk, method)].append(decision_id)
    if not pending:
        return {}
    if connection.vendor == "postgresql":
        # One statement for every method: the ids and methods as two array parameters.
        pairs = [(i, method) for (_, method), ids in pending.items() for i in ids]
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {Explanation._meta.db_table} "
                "(decision_id, method, status, attempts, created_at, updated_at) "
                "SELECT v.decision_id, v.method, %s, 0, %s, %s "
                "FROM unnest(%s::bigint[], %s::text[]) AS v(decision_id, method)",
                [
                    *(Explanation.PENDING, now, now),
                    id_array(i for i, _ in pairs),
                    [m for _, m in pairs],
                ],
            )
    else:
        Explanation.objects.bulk_create(
            Explanation(decision_id=decision_id, method=method, created_at=now, updated_at=now)
            for (_, method), decision_ids in pending.items()
            for decision_id in decision_ids
        )
    pending = dict(pending)
    transaction.on_commit(lambda: send_pending(pending), robust=True)
    return pending


def send_pending(pending: Pending) -> None:
    """Decisions just recorded go to the publisher thread, not to wait for the broker."""
    enqueue_soon(pending)


@transaction.atomic
def request_explanations(
    actor: roles.Actor, decision: Decision, methods: Any, *, ip=None
) -> list[str]:
    """(Re)compute explanations of one decision now, on the priority queue, with a new seed."""
    actor.require(roles.REQUEST_EXPLANATIONS)
    refuse_erased(decision, "its explanations")
    known = [m for m, _ in Explanation.METHODS]
    if (
        not isinstance(methods, list)
        or not methods
        or not all(isinstance(m, str) for m in methods)
        or set(methods) - set(known)
    ):
        raise InvalidInput(f"methods must be a non-empty list drawn from {known}.")
    now = timezone.now()
    for method in dict.fromkeys(methods):
        explanation, created = Explanation.objects.select_for_update().get_or_create(
            decision=decision, method=method, defaults={"created_at": now, "updated_at": now}
        )
        if not created:
            explanation.status, explanation.attempts, explanation.updated_at = (
                Explanation.PENDING,
                0,
                now,
            )
            explanation.save(update_fields=["status", "attempts", "updated_at"])
    record_event("decision.explain_requested", actor=actor, target=decision, ip=ip, methods=methods)
    pending = {(decision.model_version_id, m): [decision.pk] for m in dict.fromkeys(methods)}
    transaction.on_commit(lambda: _send_priority(pending), robust=True)
    return list(dict.fromkeys(methods))


def _send_priority(pending: Pending) -> None:
    """A request waiting is sent at once, on its own queue, with a new seed."""
    try:
        enqueue_batches(pending, priority=True, new_seed=True)
    except Exception:
        log.exception("explain.enqueue.failed priority=1")
