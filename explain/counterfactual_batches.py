"""A worker's batch of counterfactuals: claim the work rows, search (the version's search
cached beside its explainers), re-score and store. Imported by explain/tasks.py alone (it
loads models); the rest of the work is explain/counterfactual_work.py."""

from __future__ import annotations

import logging
import time
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from auditapp.hashing import sha256_hex
from auditapp.registry.models import ModelVersion
from auditapp.tasking import TRANSIENT_ERRORS
from explain import counterfactual as cf
from explain.counterfactual_work import LEASE, MAX_ATTEMPTS, seed_for
from explain.engine import describe
from explain.explainers import cached_search
from explain.models import CounterfactualConfig, CounterfactualResult, CounterfactualWork

log = logging.getLogger(__name__)

# What the engine's document says that the configuration row (and the seed column) hold.
CONFIG_KEYS = ("method", "method_version", "library_versions", "config", "seed")


def _claim(decision_ids: list[int], now: datetime) -> list[CounterfactualWork]:
    """Pending (or lost running) rows of these decisions become running; rows past the
    attempt cap fail."""
    claimable = Q(status=CounterfactualWork.PENDING) | Q(
        status=CounterfactualWork.RUNNING, updated_at__lt=now - LEASE
    )
    with transaction.atomic():
        rows = list(
            CounterfactualWork.objects.filter(claimable, decision_id__in=decision_ids)
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("decision__model_version")
        )
        spent = [w.pk for w in rows if w.attempts >= MAX_ATTEMPTS]
        if spent:
            CounterfactualWork.objects.filter(pk__in=spent).update(
                status=CounterfactualWork.FAILED,
                error=f"gave up after {MAX_ATTEMPTS} attempts",
                updated_at=now,
            )
        rows = [w for w in rows if w.attempts < MAX_ATTEMPTS]
        for work in rows:
            work.status, work.attempts, work.updated_at = (
                CounterfactualWork.RUNNING,
                work.attempts + 1,
                now,
            )
        CounterfactualWork.objects.bulk_update(rows, ["status", "attempts", "updated_at"])
    return rows


def run_batch(model_version_id: int, decision_ids: list[int]) -> dict:
    """Search, re-score and store the counterfactuals of one batch of a version's decisions."""
    model_version = ModelVersion.objects.get(pk=model_version_id)
    claimed = _claim(decision_ids, timezone.now())
    if not claimed:
        return {"computed": 0, "failed": 0}
    try:
        search = cached_search(model_version)
        setup_error = ""
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # the model or its background cannot be used: every row fails
        log.exception("explain.cf.setup.failed model_version=%s", model_version_id)
        search, setup_error = None, describe(exc)
    computed = []
    renewed = time.monotonic()
    for work in claimed:
        if time.monotonic() - renewed > LEASE.total_seconds() / 3:  # keep the lease
            CounterfactualWork.objects.filter(
                pk__in=[w.pk for w in claimed], status=CounterfactualWork.RUNNING
            ).update(updated_at=timezone.now())
            renewed = time.monotonic()
        decision = work.decision
        seed = seed_for(decision.content_hash)
        started = time.perf_counter()
        if search is None:
            result = cf.CounterfactualResult(seed=seed, error=setup_error)
        else:
            result = search.explain(decision.full_inputs(), seed)
        computed.append((work, result, (time.perf_counter() - started) * 1000))
    store(model_version, computed)
    failed = sum(not r.ok for _, r, _ in computed)
    log.info(
        "explain.cf.batch.done model_version=%s n=%d failed=%d",
        model_version_id,
        len(claimed),
        failed,
    )
    return {"computed": len(claimed) - failed, "failed": failed}


def config_digest(result: cf.CounterfactualResult) -> str:
    return sha256_hex(
        {
            "method": result.method,
            "method_version": result.method_version,
            "library_versions": result.library_versions,
            "content": result.config,
        }
    )


@transaction.atomic
def store(
    model_version: ModelVersion,
    computed: list[tuple[CounterfactualWork, cf.CounterfactualResult, float]],
) -> list[CounterfactualResult]:
    """Insert one result per claimed row still ours (its configuration found or inserted
    once) and point the rows at them: done, or failed with the engine's error.

    A row no longer ours is left as it is, and its result is not written: an erasure
    (which fails the row and deletes the copies) or a recomputation asked for meanwhile.
    A result stored after the erasure had kept the person's inputs it had deleted. The
    rows are locked first, so an erasure running now waits, or is waited for."""
    ours = set(
        CounterfactualWork.objects.select_for_update()
        .filter(pk__in=[work.pk for work, _, _ in computed], status=CounterfactualWork.RUNNING)
        .values_list("pk", "attempts")
    )
    computed = [c for c in computed if (c[0].pk, c[0].attempts) in ours]
    now = timezone.now()
    configs: dict[str, CounterfactualConfig] = {}
    rows = []
    for work, result, duration_ms in computed:
        digest = config_digest(result)
        if digest not in configs:
            configs[digest], _ = CounterfactualConfig.objects.get_or_create(
                model_version=model_version,
                digest=digest,
                defaults={
                    "method": result.method,
                    "method_version": result.method_version,
                    "library_versions": result.library_versions,
                    "content": result.config,
                    "created_at": now,
                },
            )
        document = {k: v for k, v in result.document().items() if k not in CONFIG_KEYS}
        rows.append(
            CounterfactualResult(
                decision_id=work.decision_id,
                config=configs[digest],
                document=document,
                quality=result.quality,
                found=len(result.counterfactuals),
                seed=result.seed,
                error=result.error,
                duration_ms=duration_ms,
                requested_by_id=work.requested_by_id,
                computed_at=now,
            )
        )
    CounterfactualResult.objects.bulk_create(rows)
    for (work, result, _), row in zip(computed, rows, strict=True):
        # Only a row still ours: a recomputation asked for meanwhile stays pending.
        CounterfactualWork.objects.filter(
            pk=work.pk, status=CounterfactualWork.RUNNING, attempts=work.attempts
        ).update(
            status=CounterfactualWork.DONE if result.ok else CounterfactualWork.FAILED,
            error=result.error,
            result=row,
            requested_by=None,
            updated_at=now,
        )
    return rows
