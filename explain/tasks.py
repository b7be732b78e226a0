"""Celery tasks for explanations: thin wrappers that take ids, reload rows, call the engine.

The explain/ modules that know the ORM are this one, models.py and results.py (which
stores and reads back results); only this one knows Celery.
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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    connections,
    transaction,
)
from django.db.models import F, Q
from django.utils import timezone

from auditapp.decisions.models import Decision
from auditapp.decisions.signals import explanations_stored
from auditapp.registry.agreement import judge_agreement
from auditapp.registry.models import agreement_settings
from explain import engine, records, selftest
from explain.backends import backend
from explain.models import Explanation, ExplanationResult
from explain.results import Stored, insert_results

log = logging.getLogger(__name__)

QUEUE_FOR_METHOD = {"shap": "explain", "lime": "explain-lime"}
PER_ROW_QUEUE = "explain-lime"
PRIORITY_QUEUE = "explain-priority"
PER_ROW_BATCH = 10  # model-agnostic SHAP takes seconds a row: small tasks
# LIME takes ~0.1 s a row: tasks of a few seconds, so that a worker serving
# every queue (the quick start) turns to waiting SHAP batches often.
LIME_BATCH = 25
MAX_ATTEMPTS = 5
# Settings, "Recovery: leases, time limits, queues", say why these values and this order.
SOFT_TIME_LIMIT = settings.ATTEST_EXPLAIN_SOFT_TIME_LIMIT
HARD_TIME_LIMIT = settings.ATTEST_EXPLAIN_TIME_LIMIT
LEASE = timedelta(seconds=settings.ATTEST_EXPLAIN_LEASE)
HEARTBEAT = settings.ATTEST_EXPLAIN_HEARTBEAT
UNSENT_GRACE = timedelta(seconds=settings.ATTEST_UNSENT_GRACE)
PENDING_GRACE = timedelta(seconds=settings.ATTEST_PENDING_GRACE)
# The queues explanation tasks wait in; the sweeper's own is `maintenance`.
EXPLAIN_QUEUES = ("explain", "explain-lime", "explain-priority")
# The work-state time of a pending row whose task could not be sent (the broker was
# down): older than any grace, so the next sweep sends it whatever waits in the broker.
NOT_SENT = datetime(1970, 1, 1, tzinfo=UTC)
CACHE_SIZE = 8
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


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
        with explain_batch.app.producer_or_acquire() as producer:
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


def _send_in_batches(
    producer, model_version_id: int, method: str, ids: list[int], *, size, queue, new_seed
) -> int:
    """Send one version's ids for one method as tasks of `size` on `queue`; the task count."""
    batches = _chunks(ids, size)
    for batch in batches:
        _send(producer, model_version_id, method, batch, queue=queue, new_seed=new_seed)
    return len(batches)


def _send(producer, model_version_id: int, method: str, batch: list[int], *, queue, new_seed):
    explain_batch.apply_async(
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


def _publish_forever() -> None:
    while True:
        handed_at, pending = _outbox.get()
        try:
            _publish(handed_at, pending)
        finally:
            _outbox.task_done()


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
    global _publisher
    with _publisher_lock:
        if _publisher is None or not _publisher.is_alive():
            _publisher = threading.Thread(target=_publish_forever, name="explain-publisher")
            _publisher.daemon = True
            _publisher.start()
            # Commands (import_decisions, load_demo) exit right after recording:
            # send what is queued first.
            atexit.register(wait_until_published)
    _outbox.put((timezone.now(), pending))


def wait_until_published() -> None:
    """Block until everything handed to enqueue_soon has been sent (or marked not sent)."""
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
    if options is None and method == "shap":
        options = selftest.shap_options(model_version.self_test)
    option_key = (method, tuple(sorted((options or {}).items())))
    if option_key not in explainers:
        explainers[option_key] = _build_explainer(context, method, options or {})
    return context, explainers[option_key]


def _build_explainer(context, method: str, options: dict):
    return backend(method).explainer(context, options)


def default_seed(content_hash: str) -> int:
    """A decision's default seed: fixed by its content, so a re-run reproduces it."""
    return int(content_hash[:8], 16)


# -- the batch ------------------------------------------------------------------------------------


@dataclass
class ClaimedDecision:
    """What a batch reads of a decision: its inputs, its hash (default seed) and its score."""

    id: int
    inputs: dict
    content_hash: str
    score: float | None


@dataclass
class ClaimedExplanation:
    """An explanation row a batch has claimed: what it read, then what it will write.

    A plain object rather than a model instance: building a few hundred Explanation
    and Decision instances per batch costs more than TreeSHAP on a small model.
    Its attributes are named as the model's, so the review rules read it alike.
    `seed` is its newest result's (the one a re-run reproduces); `outcome` what
    this batch computed, stored as a new result (`result_id`).
    """

    id: int
    decision: ClaimedDecision
    method: str
    status: str
    attempts: int
    seed: int | None
    error: str
    outcome: engine.ExplanationResult | None = None
    result_id: int | None = None
    agreement: dict | None = None
    updated_at: datetime | None = None

    @property
    def pk(self) -> int:
        return self.id

    @property
    def decision_id(self) -> int:
        return self.decision.id

    @property
    def attributions(self) -> dict | None:
        return None if self.outcome is None else self.outcome.attributions

    @property
    def quality(self) -> dict | None:
        if self.outcome is None:
            return None
        return records.with_agreement(self.outcome.quality, self.agreement)


GAVE_UP = f"gave up after {MAX_ATTEMPTS} attempts"

# One statement claims the batch on PostgreSQL: lock the unfinished explanation
# rows nobody else holds (of the explanations only: a SHAP and a LIME task of the
# same decisions must not skip each other), count the attempt (or give up on rows
# that used them all) and return what the engine reads, joined from the decision
# (and the seed of its newest result, if any).
CLAIM_SQL = """
WITH candidates AS (
    SELECT e.id, e.decision_id, e.result_id FROM {explanations} AS e
    JOIN {decisions} AS d ON d.id = e.decision_id
    WHERE e.decision_id = ANY(%(decision_ids)s::bigint[]) AND e.method = %(method)s
      AND d.model_version_id = %(model_version_id)s AND e.status <> %(done)s
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE {explanations} AS e SET
    status = CASE WHEN e.attempts >= %(max_attempts)s THEN %(failed)s ELSE %(running)s END,
    attempts = CASE WHEN e.attempts >= %(max_attempts)s THEN e.attempts ELSE e.attempts + 1 END,
    error = CASE WHEN e.attempts >= %(max_attempts)s AND e.error = '' THEN %(gave_up)s
                 ELSE e.error END,
    updated_at = %(now)s
FROM candidates AS c
    JOIN {decisions} AS d ON d.id = c.decision_id
    LEFT JOIN {results} AS r ON r.id = c.result_id
WHERE e.id = c.id
RETURNING e.id, e.decision_id, e.status, e.attempts, r.seed, e.error,
          d.content_hash, d.score, d.inputs
"""
CLAIM_COLUMNS = (
    "id",
    "decision_id",
    "status",
    "attempts",
    "result__seed",
    "error",
    "decision__content_hash",
    "decision__score",
    "decision__inputs",
)


def _claim(model_version_id: int, method: str, decision_ids: list[int]) -> list[ClaimedExplanation]:
    """Mark the batch's unfinished explanations running and count the attempt, atomically.

    Rows that used up their attempts are marked failed instead, and reviewed.
    """
    now = timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            rows = _claim_postgresql(model_version_id, method, decision_ids, now)
        else:
            rows = _claim_portable(model_version_id, method, decision_ids, now)
        exhausted = [row for row in rows if row.status == Explanation.FAILED]
        if exhausted:
            explanations_stored.send(Explanation, explanations=exhausted, explain_settings=None)
    return [row for row in rows if row.status == Explanation.RUNNING]


def _claim_postgresql(model_version_id, method, decision_ids, now) -> list[ClaimedExplanation]:
    sql = CLAIM_SQL.format(
        explanations=Explanation._meta.db_table,
        decisions=Decision._meta.db_table,
        results=ExplanationResult._meta.db_table,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "decision_ids": _id_array(decision_ids),
                "method": method,
                "model_version_id": model_version_id,
                "done": Explanation.DONE,
                "failed": Explanation.FAILED,
                "running": Explanation.RUNNING,
                "max_attempts": MAX_ATTEMPTS,
                "gave_up": GAVE_UP,
                "now": now,
            },
        )
        fetched = cursor.fetchall()
    # Django leaves jsonb as text for JSONField to decode; orjson is several times faster.
    return sorted(
        (_claimed(method, now, *row[:-1], orjson.loads(row[-1])) for row in fetched),
        key=lambda row: row.decision_id,
    )


def _claim_portable(model_version_id, method, decision_ids, now) -> list[ClaimedExplanation]:
    """The same claim in ORM statements, for SQLite (one writer at a time: nothing to skip)."""
    rows = (
        Explanation.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(
            decision_id__in=decision_ids,
            decision__model_version_id=model_version_id,
            method=method,
        )
        .exclude(status=Explanation.DONE)
        .order_by("decision_id")
        .values_list(*CLAIM_COLUMNS)
    )
    claimed = [_claimed(method, now, *row) for row in rows]
    exhausted = [row for row in claimed if row.attempts >= MAX_ATTEMPTS]
    running = [row for row in claimed if row.attempts < MAX_ATTEMPTS]
    Explanation.objects.filter(pk__in=[row.id for row in running]).update(
        status=Explanation.RUNNING, attempts=F("attempts") + 1, updated_at=now
    )
    for row in running:
        row.status, row.attempts = Explanation.RUNNING, row.attempts + 1
    for row in exhausted:
        row.status, row.error = Explanation.FAILED, row.error or GAVE_UP
    _write(exhausted, ["status", "error", "updated_at"])
    return claimed


def _claimed(
    method, now, pk, decision_id, status, attempts, seed, error, content_hash, score, inputs
) -> ClaimedExplanation:
    return ClaimedExplanation(
        id=pk,
        decision=ClaimedDecision(decision_id, inputs, content_hash, score),
        method=method,
        status=status,
        attempts=attempts,
        seed=seed,
        error=error,
        updated_at=now,
    )


# Column types, for writing many work rows in one statement on PostgreSQL.
COLUMN_TYPES = {
    "status": "text",
    "error": "text",
    "result_id": "bigint",
    "agreement": "jsonb",
    "updated_at": "timestamptz",
}
SCALARS = (str, int, float, bool, type(None), datetime)


def _write(explanations: list, fields: list[str]) -> None:
    """Write these fields of many explanations' work rows: one UPDATE on PostgreSQL.

    A value every row shares (the status, the time, no agreement) is sent once, as a
    parameter; only what differs per row travels in the JSON recordset.
    (Django's bulk_update spends seconds building CASE expressions for a few
    hundred rows; the database needs milliseconds for this statement.)
    """
    if not explanations:
        return
    if connection.vendor != "postgresql":
        models = [Explanation(pk=e.pk, **{f: getattr(e, f) for f in fields}) for e in explanations]
        Explanation.objects.bulk_update(models, fields)
        return
    shared = [f for f in fields if _shared_by_all(explanations, f)]
    varying = [f for f in fields if f not in shared]
    assignments = [f"{f} = %s::{COLUMN_TYPES[f]}" for f in shared]
    assignments += [f"{f} = v.{f}" for f in varying]
    params: list = [_parameter(f, getattr(explanations[0], f)) for f in shared]
    table = Explanation._meta.db_table
    if varying:
        records = [{"id": e.pk, **{f: getattr(e, f) for f in varying}} for e in explanations]
        columns = ", ".join(f"{f} {COLUMN_TYPES[f]}" for f in varying)
        sql = (
            f"UPDATE {table} AS e SET {', '.join(assignments)} "
            f"FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, {columns}) WHERE e.id = v.id"
        )
        params.append(orjson.dumps(records).decode())
    else:
        sql = f"UPDATE {table} AS e SET {', '.join(assignments)} WHERE e.id = ANY(%s::bigint[])"
        params.append(_id_array([e.pk for e in explanations]))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _shared_by_all(explanations: list, field: str) -> bool:
    """The same value on every row: the same object, or equal scalars of one type."""
    values = [getattr(e, field) for e in explanations]
    first = values[0]
    if all(value is first for value in values):
        return True
    if isinstance(first, SCALARS):
        kind = type(first)
        return all(type(value) is kind and value == first for value in values)
    return False


def _id_array(ids) -> str:
    """A bigint[] literal: psycopg's client-side array quoting costs a few µs per element."""
    return "{" + ",".join(str(int(i)) for i in ids) + "}"


def _parameter(field: str, value):
    if COLUMN_TYPES[field] == "jsonb":
        return None if value is None else orjson.dumps(value).decode()
    return value


def _apply(explanation: ClaimedExplanation, result: engine.ExplanationResult, now):
    explanation.updated_at = now
    if not result.ok:
        explanation.status = Explanation.FAILED
        explanation.error = result.error
        return
    explanation.status = Explanation.DONE
    explanation.error = ""
    explanation.outcome = result
    explanation.agreement = None  # judged again against this new result, if there is a partner


# A success points the work row at its new result (its agreement is judged anew).
DONE_FIELDS = ["status", "error", "result_id", "agreement", "updated_at"]
# A failed attempt says why and when; the results stored before stay, and the newest shows.
FAILURE_FIELDS = ["status", "error", "updated_at"]


@dataclass
class Counterpart:
    """The other method's finished explanation of a decision (its newest result), for the
    agreement figures."""

    id: int
    decision_id: int
    method: str
    attributions: dict
    result_quality: dict
    agreement: dict | None = None
    status: str = Explanation.DONE
    error: str = ""

    @property
    def pk(self) -> int:
        return self.id

    @property
    def quality(self) -> dict:
        return records.with_agreement(self.result_quality, self.agreement)


def _counterparts(decision_ids: list[int], method: str, names: list[str]) -> list[Counterpart]:
    """The finished explanations of these decisions by `method`: one query, no model instances."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT e.id, e.decision_id, r.attributions, r.quality "
                f"FROM {Explanation._meta.db_table} AS e "
                f"JOIN {ExplanationResult._meta.db_table} AS r ON r.id = e.result_id "
                "WHERE e.decision_id = ANY(%s::bigint[]) AND e.method = %s AND e.status = %s",
                [_id_array(decision_ids), method, Explanation.DONE],
            )
            rows = [(*row[:3], orjson.loads(row[3])) for row in cursor.fetchall()]
    else:
        rows = Explanation.objects.filter(
            decision_id__in=decision_ids, method=method, status=Explanation.DONE
        ).values_list("id", "decision_id", "result__attributions", "result__quality")
    return [
        Counterpart(pk, decision_id, method, records.unpack(packed, names), quality)
        for pk, decision_id, packed, quality in rows
    ]


def _fill_agreement(
    done: list[ClaimedExplanation], method: str, names: list[str], explain_settings=None
) -> list[Counterpart]:
    """Put SHAP-LIME agreement on the LIME work rows of these decisions, whichever finished
    last (the results compared are kept; the agreement is derived from them).

    The figures come with the verdict under the version's thresholds
    (`explain_settings`): whether they were judged at all (LIME's fit good
    enough), whether they agree, and why.
    A LIME batch fills its own rows (written with its results); a SHAP batch
    returns the LIME rows it filled, to be written too.
    """
    if not done:
        return []
    thresholds = agreement_settings(explain_settings)
    other = "shap" if method == "lime" else "lime"
    counterparts = {
        c.decision_id: c for c in _counterparts([e.decision_id for e in done], other, names)
    }
    changed = []
    for explanation in done:
        partner = counterparts.get(explanation.decision_id)
        if partner is None:
            continue
        shap_row, lime_row = (explanation, partner) if method == "shap" else (partner, explanation)
        fidelity = (lime_row.quality or {}).get("fidelity_r2")
        figures = engine.agreement(shap_row.attributions, lime_row.attributions)
        verdict = judge_agreement(figures, fidelity, thresholds)
        lime_row.agreement = {**figures, **verdict}
        changed.append(lime_row)
    return changed if method == "shap" else []


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
    sent_on = {}  # how many decisions this task handed on to other tasks
    if not setup_error and _is_per_row(explainer) and len(decision_ids) > PER_ROW_BATCH:
        # Slow per-row methods: this task explains one small batch itself (no
        # round trip through the broker for it) and sends the rest to their own
        # queue in small batches, so they never hold up TreeSHAP for long and
        # stay well inside the time limit.
        decision_ids, rest = decision_ids[:PER_ROW_BATCH], decision_ids[PER_ROW_BATCH:]
        with explain_batch.app.producer_or_acquire() as producer:
            _send_in_batches(
                producer,
                model_version_id,
                method,
                rest,
                size=PER_ROW_BATCH,
                queue=PER_ROW_QUEUE,
                new_seed=new_seed,
            )
        sent_on = {"split": len(rest)}
    claimed = _claim(model_version_id, method, decision_ids)
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
            results = _explain_claimed(context, explainer, method, claimed, new_seed, tolerance)
    elapsed_ms = (time.perf_counter() - started) * 1000
    _store_results(claimed, results, model_version, method, elapsed_ms)
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


def _explain_claimed(context, explainer, method, claimed, new_seed, score_tolerance) -> list:
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


def _store_results(claimed, results, model_version, method, elapsed_ms) -> list[Stored]:
    """Insert every new result of the batch in one bulk statement, point the work rows at
    them (with the agreement figures), and tell who listens (decisions.signals: the review
    queue picks its cases in this transaction). Returns the results inserted.
    """
    now = timezone.now()
    for explanation, result in zip(claimed, results, strict=True):
        _apply(explanation, result, now)
    done = [e for e in claimed if e.status == Explanation.DONE]
    explain_settings = model_version.explain_settings
    with transaction.atomic():
        # Locked first: the newest result of a row is the last stored, so ids and
        # pointers agree even when two tasks explain the same decision at once.
        _lock([e.id for e in claimed])
        partners = _fill_agreement(
            done, method, model_version.parsed_schema.names, explain_settings
        )
        stored = insert_results(
            model_version,
            method,
            [(e.decision_id, e.outcome) for e in done],
            elapsed_ms / len(claimed),
            now,
        )
        for explanation, inserted in zip(done, stored, strict=True):
            explanation.result_id = inserted.id
        _write(done, DONE_FIELDS)
        _write([e for e in claimed if e.status != Explanation.DONE], FAILURE_FIELDS)
        _write(partners, ["agreement"])
        explanations_stored.send(
            Explanation, explanations=[*claimed, *partners], explain_settings=explain_settings
        )
    return stored


def _lock(explanation_ids: list[int]) -> None:
    """Lock these work rows until the transaction ends."""
    list(
        Explanation.objects.select_for_update(of=("self",))
        .filter(pk__in=explanation_ids)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


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
    # Workers keep their connection between tasks (settings: CELERY_DB_REUSE_MAX);
    # one that broke or outlived CONN_MAX_AGE is replaced here, as a request would
    # (never inside a caller's transaction, e.g. a test calling the task directly).
    if not connection.in_atomic_block:
        close_old_connections()
    return run_batch(model_version_id, method, decision_ids, new_seed=new_seed)


# -- leases and the sweeper ---------------------------------------------------------------
# A claimed (running) row is its worker's while the worker renews its lease (updated_at)
# every HEARTBEAT seconds. A worker that dies, or is killed at the hard time limit,
# stops renewing; the sweeper then returns its rows to the queue.


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


def explain_queues_empty() -> bool:
    """No explanation task waits in the broker (a task a worker holds is not counted)."""
    with explain_batch.app.connection_for_read() as broker:
        for name in EXPLAIN_QUEUES:
            with broker.channel() as channel:
                try:
                    if channel.queue_declare(queue=name, passive=True).message_count:
                        return False
                except broker.channel_errors:  # Redis keeps no key for an empty queue
                    continue
    return True


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


@shared_task(name="explain.sweep", acks_late=True, soft_time_limit=120, time_limit=150)
def sweep_pending() -> int:
    return sweep()
