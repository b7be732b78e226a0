"""One batch of explanations: claim the rows, explain them, store the results.

Each step has its module (claims, explainers, engine, storing); this one runs
them in order, keeps the lease while the engine works, and hands slow per-row
work on to smaller tasks.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import nullcontext

from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection

from auditapp.registry.models import ModelVersion
from auditapp.tasking import TRANSIENT_ERRORS
from explain import engine
from explain.backends import backend
from explain.claims import claim
from explain.explainers import cached_explainer
from explain.leases import lease_kept
from explain.models import Explanation
from explain.publishing import PER_ROW_QUEUE, send_in_batches
from explain.storing import store_results

log = logging.getLogger(__name__)

PER_ROW_BATCH = 10  # model-agnostic SHAP takes seconds a row: small tasks


def default_seed(content_hash: str) -> int:
    """A decision's default seed: fixed by its content, so a re-run reproduces it."""
    return int(content_hash[:8], 16)


def run_batch(
    model_version_id: int, method: str, decision_ids: list[int], *, new_seed: bool = False
) -> dict:
    """Explain one batch of decisions of one model version with one method."""
    model_version = ModelVersion.objects.get(pk=model_version_id)
    try:
        context, explainer = cached_explainer(model_version, method)
        setup_error = ""
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # the model or explainer cannot be used: every row fails with why
        log.exception("explain.setup.failed model_version=%s method=%s", model_version_id, method)
        setup_error = engine.describe(exc)
    sent_on = {}  # how many decisions this task handed on to other tasks
    if not setup_error and _is_per_row(explainer) and len(decision_ids) > PER_ROW_BATCH:
        # Slow per-row methods: this task explains one small batch itself (no
        # round trip through the broker for it) and sends the rest to their own
        # queue in small batches, so they never hold up TreeSHAP for long and
        # stay well inside the time limit.
        decision_ids, rest = decision_ids[:PER_ROW_BATCH], decision_ids[PER_ROW_BATCH:]
        with current_app.producer_or_acquire() as producer:
            send_in_batches(
                producer,
                model_version_id,
                method,
                rest,
                size=PER_ROW_BATCH,
                queue=PER_ROW_QUEUE,
                new_seed=new_seed,
            )
        sent_on = {"split": len(rest)}
    claimed = claim(model_version_id, method, decision_ids)
    if not claimed:
        return {"explained": 0, "failed": 0, **sent_on}
    started = time.perf_counter()
    # Not inside a caller's transaction (a test calling the task): the renewal's own
    # connection would wait for the caller's row locks, and the caller for it.
    with nullcontext() if connection.in_atomic_block else lease_kept([e.id for e in claimed]):
        if setup_error:
            results = [engine.ExplanationResult(method=method, error=setup_error)] * len(claimed)
        else:
            tolerance = model_version.explain_settings.get(
                "score_tolerance", engine.SCORE_TOLERANCE
            )
            results = explain_claimed(context, explainer, method, claimed, new_seed, tolerance)
    elapsed_ms = (time.perf_counter() - started) * 1000
    store_results(claimed, results, model_version, method, elapsed_ms)
    failed = sum(e.status == Explanation.FAILED for e in claimed)
    log.info(
        "explain.batch.done model_version=%s method=%s n=%d failed=%d ms=%.0f",
        model_version_id,
        method,
        len(claimed),
        failed,
        elapsed_ms,
    )
    return {"explained": len(claimed) - failed, "failed": failed, **sent_on}


def _is_per_row(explainer) -> bool:
    """Model-agnostic SHAP is slow per row (LIME, ~0.1 s a row, fits a 250-row task)."""
    return getattr(explainer, "kind", "") == "agnostic"


def explain_claimed(context, explainer, method, claimed, new_seed, score_tolerance) -> list:
    seeds = [
        random.SystemRandom().randrange(2**31)
        if new_seed
        else (e.seed if e.seed is not None else default_seed(e.decision.content_hash))
        for e in claimed
    ]
    try:
        return engine.explain(
            context,
            backend(method),
            [e.decision.inputs for e in claimed],
            seeds,
            {"explainer": explainer},
            scores=[e.decision.score for e in claimed],
            score_tolerance=score_tolerance,
        )
    except SoftTimeLimitExceeded:
        return [engine.ExplanationResult(method=method, error="time limit exceeded")] * len(claimed)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        log.exception("explain.batch.failed method=%s", method)
        return [engine.ExplanationResult(method=method, error=engine.describe(exc))] * len(claimed)
