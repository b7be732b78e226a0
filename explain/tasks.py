"""Celery tasks for explanations: thin wrappers that take ids, reload rows, call the engine.

The only explain/ modules that know the ORM and Celery are this one and models.py.
"""

from __future__ import annotations

import atexit
import logging
import queue
import random
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from datetime import timedelta

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from auditapp.decisions.hashing import canonical_json
from explain import engine
from explain.models import Explanation

log = logging.getLogger(__name__)

QUEUE_FOR_METHOD = {"shap": "explain", "lime": "explain-lime"}
PER_ROW_QUEUE = "explain-lime"
PRIORITY_QUEUE = "explain-priority"
PER_ROW_BATCH = 10  # model-agnostic SHAP takes seconds a row: small tasks
# LIME takes ~0.1 s a row: tasks of a few seconds, so that a worker serving
# every queue (the quick start) turns to waiting SHAP batches often.
LIME_BATCH = 25
MAX_ATTEMPTS = 5
SOFT_TIME_LIMIT = 300  # below the broker's visibility timeout (settings: 3600 s)
HARD_TIME_LIMIT = 360
PENDING_GRACE = timedelta(minutes=5)
CACHE_SIZE = 8
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


def enqueue_batches(
    pending: dict[tuple[int, str], Iterable[int]], *, priority: bool = False, new_seed: bool = False
) -> int:
    """Send decision ids in batches of one model version and method; return the task count.

    All messages go through one producer (one broker connection): a 10,000
    decision request is about 80 messages, not a connection per message.
    """
    sent = 0
    with explain_batch.app.producer_or_acquire() as producer:
        for (model_version_id, method), decision_ids in pending.items():
            ids = list(decision_ids)
            size = settings.ATTEST_EXPLAIN_BATCH_SIZE if method == "shap" else LIME_BATCH
            queue = PRIORITY_QUEUE if priority else QUEUE_FOR_METHOD[method]
            for start in range(0, len(ids), size):
                batch = ids[start : start + size]
                explain_batch.apply_async(
                    args=(model_version_id, method, batch),
                    kwargs={"new_seed": new_seed},
                    queue=queue,
                    producer=producer,
                    # Celery would otherwise repr() every id list for its logs.
                    argsrepr=f"({model_version_id}, {method!r}, <{len(batch)} decision ids>)",
                )
                sent += 1
    return sent


# -- publishing off the request path ------------------------------------------------------
# A client recording decisions should not wait for the broker: the ids go to a
# publisher thread of this process. If the process dies before they are sent,
# or the broker is down, the rows stay pending and the sweeper re-sends them.

_outbox: queue.Queue = queue.Queue()
_publisher: threading.Thread | None = None
_publisher_lock = threading.Lock()


def _publish_forever() -> None:
    while True:
        pending = _outbox.get()
        try:
            enqueue_batches(pending)
        except Exception:
            log.exception("explain.enqueue.failed batches=%d", len(pending))
        finally:
            _outbox.task_done()


def enqueue_soon(pending: dict[tuple[int, str], Iterable[int]]) -> None:
    """Hand batches to this process's publisher thread (started on first use, after a fork)."""
    global _publisher
    with _publisher_lock:
        if _publisher is None or not _publisher.is_alive():
            _publisher = threading.Thread(target=_publish_forever, name="explain-publisher")
            _publisher.daemon = True
            _publisher.start()
            # Commands (import_decisions, load_demo) exit right after recording:
            # send what is queued first.
            atexit.register(wait_until_published)
    _outbox.put(pending)


def wait_until_published() -> None:
    """Block until everything handed to enqueue_soon has been sent (or failed)."""
    _outbox.join()


# -- per-process cache of model contexts and explainers, keyed by artifact sha256 ------------

_contexts: OrderedDict[tuple, tuple[engine.ModelContext, dict]] = OrderedDict()


def _load_context(model_version) -> engine.ModelContext:
    from auditapp.registry.artifacts import sha256_hex
    from auditapp.registry.services import load_model, parse_background

    schema = model_version.parsed_schema
    background = None
    if model_version.background:
        with model_version.background.open("rb") as handle:
            data = handle.read()
        if sha256_hex(data) != model_version.background_sha256:
            raise ValueError("the background sample changed after registration; refusing it")
        background = schema.frame(parse_background(data, schema))
    return engine.ModelContext(
        model=load_model(model_version),
        schema=schema,
        background=background,
        background_sha256=model_version.background_sha256,
        artifact_sha256=model_version.artifact_sha256,
    )


def cached_explainer(model_version, method: str, options: dict | None = None):
    """(context, explainer) for a version, from a bounded per-process LRU cache."""
    key = (
        model_version.artifact_sha256,
        model_version.background_sha256,
        model_version.schema_sha256,
    )
    if key in _contexts:
        _contexts.move_to_end(key)
    else:
        _contexts[key] = (_load_context(model_version), {})
        while len(_contexts) > CACHE_SIZE:
            _contexts.popitem(last=False)
    context, explainers = _contexts[key]
    option_key = (method, tuple(sorted((options or {}).items())))
    if option_key not in explainers:
        explainers[option_key] = _build_explainer(context, method, options or {})
    return context, explainers[option_key]


def _build_explainer(context, method: str, options: dict):
    if method == "shap":
        from explain.shap_backend import ShapExplainer

        return ShapExplainer(context, options)
    from explain.lime_backend import LimeExplainer

    return LimeExplainer(context, options)


def default_seed(content_hash: str) -> int:
    """A decision's default seed: fixed by its content, so a re-run reproduces it."""
    return int(content_hash[:8], 16)


# -- the batch ------------------------------------------------------------------------------------


CLAIM_FIELDS = (
    "id",
    "decision_id",
    "method",
    "status",
    "attempts",
    "seed",
    "error",
    "quality",
    "decision__id",
    "decision__inputs",
    "decision__content_hash",
    "decision__score",
)


def _claim(model_version_id: int, method: str, decision_ids: list[int]) -> list[Explanation]:
    """Mark the batch's unfinished explanations running and count the attempt, atomically."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            # of=("self",): lock the explanation rows only, not the joined decisions,
            # or a SHAP and a LIME task of the same decisions would skip each other.
            Explanation.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(
                decision_id__in=decision_ids,
                decision__model_version_id=model_version_id,
                method=method,
            )
            .exclude(status=Explanation.DONE)
            .select_related("decision")
            # Only what the batch reads: decoding every JSON column of a few hundred
            # decisions costs more than explaining them with TreeSHAP.
            .only(*CLAIM_FIELDS)
        )
        exhausted = [e for e in rows if e.attempts >= MAX_ATTEMPTS]
        claimed = [e for e in rows if e.attempts < MAX_ATTEMPTS]
        if claimed:
            Explanation.objects.filter(pk__in=[e.pk for e in claimed]).update(
                status=Explanation.RUNNING, attempts=F("attempts") + 1, updated_at=now
            )
            for explanation in claimed:
                explanation.status = Explanation.RUNNING
                explanation.attempts += 1
                explanation.updated_at = now
        if exhausted:
            _give_up(exhausted, now)
    return claimed


def _give_up(exhausted: list[Explanation], now) -> None:
    from auditapp.reviews.services import review_explanations

    for explanation in exhausted:
        explanation.status = Explanation.FAILED
        explanation.error = explanation.error or f"gave up after {MAX_ATTEMPTS} attempts"
        explanation.updated_at = now
    _write(exhausted, ["status", "error", "updated_at"])
    review_explanations(exhausted)


# Column types, for writing many rows in one statement on PostgreSQL.
COLUMN_TYPES = {
    "status": "text",
    "error": "text",
    "explainer": "text",
    "library_version": "text",
    "output_space": "text",
    "base_value": "double precision",
    "attributions": "jsonb",
    "top_features": "jsonb",
    "quality": "jsonb",
    "config": "jsonb",
    "seed": "bigint",
    "duration_ms": "double precision",
    "updated_at": "timestamptz",
}


def _write(explanations: list[Explanation], fields: list[str]) -> None:
    """Write these fields of many explanations: one UPDATE on PostgreSQL.

    (Django's bulk_update spends seconds building CASE expressions for a few
    hundred rows; the database needs milliseconds for this statement.)
    """
    if not explanations:
        return
    if connection.vendor != "postgresql":
        Explanation.objects.bulk_update(explanations, fields)
        return
    records = [{"id": e.pk, **{f: _jsonable(getattr(e, f)) for f in fields}} for e in explanations]
    columns = ", ".join(f"{f} {COLUMN_TYPES[f]}" for f in ["id", *fields] if f != "id")
    assignments = ", ".join(f"{f} = v.{f}" for f in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Explanation._meta.db_table} AS e SET {assignments} "
            f"FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, {columns}) WHERE e.id = v.id",
            [canonical_json(records)],
        )


def _jsonable(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def _apply(explanation: Explanation, result: engine.ExplanationResult, duration_ms: float, now):
    explanation.updated_at = now
    explanation.duration_ms = duration_ms
    explanation.seed = result.seed if result.seed is not None else explanation.seed
    if not result.ok:
        explanation.status = Explanation.FAILED
        explanation.error = result.error
        return
    explanation.status = Explanation.DONE
    explanation.error = ""
    explanation.explainer = result.explainer
    explanation.library_version = result.library_version
    explanation.output_space = result.output_space
    explanation.base_value = result.base_value
    explanation.attributions = result.attributions
    explanation.top_features = result.top_features
    explanation.quality = result.quality
    explanation.config = result.config


RESULT_FIELDS = [
    "status",
    "error",
    "explainer",
    "library_version",
    "output_space",
    "base_value",
    "attributions",
    "top_features",
    "quality",
    "config",
    "seed",
    "duration_ms",
    "updated_at",
]


def _fill_agreement(explanations: list[Explanation], method: str) -> list[Explanation]:
    """Put SHAP-LIME agreement on the LIME rows of these decisions, whichever finished last."""
    other = "shap" if method == "lime" else "lime"
    counterparts = {
        e.decision_id: e
        for e in Explanation.objects.filter(
            decision_id__in=[e.decision_id for e in explanations],
            method=other,
            status=Explanation.DONE,
        )
    }
    changed = []
    for explanation in explanations:
        partner = counterparts.get(explanation.decision_id)
        if explanation.status != Explanation.DONE or partner is None:
            continue
        shap_row, lime_row = (explanation, partner) if method == "shap" else (partner, explanation)
        lime_row.quality = {
            **(lime_row.quality or {}),
            "agreement_with_shap": engine.agreement(shap_row.attributions, lime_row.attributions),
        }
        changed.append(lime_row)
    return changed


def run_batch(
    model_version_id: int, method: str, decision_ids: list[int], *, new_seed: bool = False
) -> dict:
    """Explain one batch of decisions of one model version with one method."""
    from auditapp.registry.models import ModelVersion

    model_version = ModelVersion.objects.get(pk=model_version_id)
    try:
        context, explainer = cached_explainer(model_version, method)
        setup_error = ""
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # the model or explainer cannot be used: every row fails with why
        log.exception("explain.setup.failed model_version=%s method=%s", model_version_id, method)
        setup_error = engine.describe(exc)
    if not setup_error and _is_per_row(explainer) and len(decision_ids) > PER_ROW_BATCH:
        # Slow per-row methods go to their own queue in small batches, so they
        # never hold up TreeSHAP and stay well inside the time limit.
        for start in range(0, len(decision_ids), PER_ROW_BATCH):
            explain_batch.apply_async(
                args=(model_version_id, method, decision_ids[start : start + PER_ROW_BATCH]),
                kwargs={"new_seed": new_seed},
                queue=PER_ROW_QUEUE,
            )
        return {"explained": 0, "failed": 0, "split": len(decision_ids)}
    claimed = _claim(model_version_id, method, decision_ids)
    if not claimed:
        return {"explained": 0, "failed": 0}
    started = time.perf_counter()
    if setup_error:
        results = [engine.ExplanationResult(method=method, error=setup_error)] * len(claimed)
    else:
        results = _explain_claimed(context, explainer, method, claimed, new_seed)
    elapsed_ms = (time.perf_counter() - started) * 1000
    _store_results(claimed, results, method, elapsed_ms)
    failed = sum(e.status == Explanation.FAILED for e in claimed)
    log.info(
        "explain.batch.done model_version=%s method=%s n=%d failed=%d ms=%.0f",
        model_version_id,
        method,
        len(claimed),
        failed,
        elapsed_ms,
    )
    return {"explained": len(claimed) - failed, "failed": failed}


def _is_per_row(explainer) -> bool:
    """Model-agnostic SHAP is slow per row (LIME, ~0.1 s a row, fits a 250-row task)."""
    return getattr(explainer, "kind", "") == "agnostic"


def _explain_claimed(context, explainer, method, claimed, new_seed) -> list:
    seeds = [
        random.SystemRandom().randrange(2**31)
        if new_seed
        else (e.seed if e.seed is not None else default_seed(e.decision.content_hash))
        for e in claimed
    ]
    try:
        return engine.explain(
            context, method, [e.decision.inputs for e in claimed], seeds, {"explainer": explainer}
        )
    except SoftTimeLimitExceeded:
        return [engine.ExplanationResult(method=method, error="time limit exceeded")] * len(claimed)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        log.exception("explain.batch.failed method=%s", method)
        return [engine.ExplanationResult(method=method, error=engine.describe(exc))] * len(claimed)


def _store_results(claimed, results, method, elapsed_ms) -> None:
    """Write every result of the batch in one bulk statement (plus agreement figures),
    and put the decisions the review rules pick in the review queue."""
    from auditapp.reviews.services import review_explanations

    now = timezone.now()
    for explanation, result in zip(claimed, results, strict=True):
        _apply(explanation, result, elapsed_ms / len(claimed), now)
    with transaction.atomic():
        _write(claimed, RESULT_FIELDS)
        partners = _fill_agreement(claimed, method)
        _write(partners, ["quality"])
        review_explanations([*claimed, *partners])


@shared_task(
    name="explain.batch",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=HARD_TIME_LIMIT,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=MAX_ATTEMPTS,
)
def explain_batch(
    model_version_id: int, method: str, decision_ids: list[int], new_seed: bool = False
) -> dict:
    return run_batch(model_version_id, method, decision_ids, new_seed=new_seed)


def sweep(now=None, limit: int = 20_000) -> int:
    """Re-send explanations left pending (broker down) or running too long (worker died)."""
    now = now or timezone.now()
    stale = (
        Explanation.objects.filter(status=Explanation.PENDING, updated_at__lt=now - PENDING_GRACE)
        | Explanation.objects.filter(
            status=Explanation.RUNNING,
            updated_at__lt=now - timedelta(seconds=HARD_TIME_LIMIT + 60),
        )
    ).values_list("decision__model_version_id", "method", "decision_id")[:limit]
    pending: dict[tuple[int, str], list[int]] = defaultdict(list)
    for model_version_id, method, decision_id in stale:
        pending[(model_version_id, method)].append(decision_id)
    if pending:
        # Touch them, so a backlog that is merely slow is not re-sent every minute.
        for (_, method), decision_ids in pending.items():
            Explanation.objects.filter(
                decision_id__in=decision_ids, method=method, status=Explanation.PENDING
            ).update(updated_at=now)
        enqueue_batches(pending)
        log.info("explain.sweep.resent n=%d", sum(len(v) for v in pending.values()))
    return sum(len(v) for v in pending.values())


@shared_task(name="explain.sweep", acks_late=True, soft_time_limit=120, time_limit=150)
def sweep_pending() -> int:
    return sweep()
