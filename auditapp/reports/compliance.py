"""The data document of a compliance report: one model version, one period.

Every section of ../shared/COMPLIANCE.md "A compliance report" is one key of
the document. Figures are aggregated in the database (Count / Avg / TruncDate,
JSON keys extracted in SQL), never by looping over decisions in Python, so a
version with 100,000 decisions in the period takes seconds. The document is
built once; the PDF, CSV and JSON renderers (render.py) all read it, so the
three formats carry the same numbers. Its canonical JSON's sha256 is the
report's content hash.

The period is half-open: from <= predicted_at < to (UTC).
"""

from __future__ import annotations

import functools
import itertools
import logging
import statistics
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db.models import (
    Avg,
    Count,
    FloatField,
    Max,
    Min,
    Q,
    QuerySet,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, TruncDate
from django.utils import timezone

from auditapp import formatting
from auditapp.accounts.models import AuditEvent
from auditapp.decisions import sealing, verification
from auditapp.decisions.models import Decision, served_q
from auditapp.decisions.reasons import adverse_reasons, protected_input_warning
from auditapp.hashing import canonical_time
from auditapp.monitoring.coverage import first_decision_at
from auditapp.monitoring.metrics import Period, compute_windows_metrics, fetch_period
from auditapp.monitoring.models import Alert, AlertRule
from auditapp.registry.models import ModelVersion
from auditapp.replicas import on_primary
from auditapp.reports import periods
from auditapp.reports.version_stats import SCORE_BINS, score_counts
from auditapp.reviews.models import Feedback, ReviewCase
from auditapp.reviews.stats import AGE_BUCKETS
from auditapp.snapshots import one_moment
from auditapp.version import __version__
from explain.models import Explanation
from explain.packing import unpack, unpack_matrix
from explain.ranking import rank_rows

log = logging.getLogger(__name__)

TOP_REASON_POSITIONS = 3  # "top reasons" = the top 3 SHAP features, as the search filter
APPENDIX_SAMPLE = 10
TOP_ERRORS = 5
IMPORTANCE_CHUNK = 5000  # packed attribution rows summed at a time
ID_LOOKUP_CHUNK = 1000  # decision ids looked up at a time (SQLite's parameter limit)
DOCUMENT_VERSION = 2  # 2: the integrity section verifies the period's decisions
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

Progress = Callable[[int, int], None]


def build_compliance_document(
    model_version: ModelVersion,
    start: datetime,
    end: datetime,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every section, in order, read at one moment; `progress(done, total)` is called after
    each one (inside that moment's read-only snapshot: write with `snapshots.write_now`)."""
    context = _Context(model_version, start, end)
    sections: dict[str, Any] = {}
    with one_moment():  # decisions keep arriving: every section counts the same ones
        for done, (key, build) in enumerate(SECTIONS, start=1):
            sections[key] = build(context)
            if progress is not None:
                progress(done, len(SECTIONS))
    return {
        "attest_document": "model_compliance",
        "document_version": DOCUMENT_VERSION,
        "scope": {
            "model": model_version.registered_model.name,
            "version": model_version.version,
            "from": canonical_time(start),
            "to": canonical_time(end),
            "period": "from <= predicted_at < to (UTC)",
        },
        "sections": sections,
    }


class _Context:
    """What every section needs: the version, the period and its decisions."""

    def __init__(self, model_version: ModelVersion, start: datetime, end: datetime):
        self.model_version = model_version
        self.start, self.end = start, end
        self.now = timezone.now()  # a window not over at this moment is partial
        self.window = periods.window_kind(start, end)
        self.schema = model_version.parsed_schema
        self.labels = {f.name: f.label for f in self.schema.features}
        # Shadow decisions (serving/) were never told to anyone: not the model's record.
        self.decisions: QuerySet = Decision.objects.served().filter(
            model_version=model_version, predicted_at__gte=start, predicted_at__lt=end
        )
        self.explanations: QuerySet = Explanation.objects.filter(
            served_q("decision__"),
            decision__model_version=model_version,
            decision__predicted_at__gte=start,
            decision__predicted_at__lt=end,
        )

    @functools.cached_property
    def period(self) -> Period:
        """The period's rows as monitoring reads them, fetched once for the pooled figures
        and every window's (sections 5 and 6)."""
        return fetch_period(self.model_version, self.start, self.end, self.window)

    @functools.cached_property
    def total(self) -> int:
        """The period's decisions, counted once for the sections that state it."""
        return self.decisions.count()

    @functools.cached_property
    def first_decision(self) -> datetime | None:
        """The version's first decision ever: a window it came after the start of is partial."""
        return first_decision_at(self.model_version)


# --- 1. cover ---------------------------------------------------------------------


def cover(ctx: _Context) -> dict[str, Any]:
    seal = sealing.latest_seal()
    return {
        "title": f"Compliance report: {ctx.model_version.registered_model.name} "
        f"v{ctx.model_version.version}",
        "product": "Attest",
        "product_version": __version__,
        "latest_seal": None
        if seal is None
        else {
            "index": seal.index,
            "tree_size": seal.tree_size,
            "root_hash": seal.root_hash,
            "sealed_at": canonical_time(seal.sealed_at),
            "last_decision_id": seal.last_decision_id,
        },
    }


# --- 2. model identity ------------------------------------------------------------


def model_identity(ctx: _Context) -> dict[str, Any]:
    version = ctx.model_version
    model = version.registered_model
    changes = version.stage_changes.select_related("changed_by").order_by("changed_at", "id")
    return {
        "model": model.name,
        "version": version.version,
        "task": model.task,
        "purpose": model.description or version.description,
        "owner": model.owner.get_username() if model.owner else None,
        "intended_use": version.intended_use,
        "limitations": version.limitations,
        "training_data": version.training_data,
        "training_metrics": version.metrics,
        "artifact_format": version.artifact_format,
        "artifact_sha256": version.artifact_sha256,
        "schema_sha256": version.schema_sha256,
        "background_sha256": version.background_sha256,
        "background_rows": version.background_rows,
        "explanation_self_test": version.self_test.get("shap"),
        "explained_approximately": version.explained_approximately,
        "stage": version.stage,
        "registered_at": canonical_time(version.created_at),
        "registered_by": version.created_by.get_username() if version.created_by else None,
        # A finding, not a figure: the model uses protected attributes (COMPLIANCE.md).
        "protected_inputs": [f.name for f in ctx.schema.features if f.protected],
        "protected_input_warning": protected_input_warning(ctx.schema),
        "features": [
            {
                "feature": f.name,
                "label": f.label,
                "type": f.type,
                "protected": f.protected,
                "sensitive": f.sensitive,
            }
            for f in ctx.schema.features
        ],
        "stage_history": [
            {
                "at": canonical_time(change.changed_at),
                "from": change.from_stage or None,
                "to": change.to_stage,
                "by": change.changed_by.get_username() if change.changed_by else None,
            }
            for change in changes
        ],
    }


# --- 3. volumes and outcomes -------------------------------------------------------


def volumes(ctx: _Context) -> dict[str, Any]:
    decisions = ctx.decisions
    per_day = (
        decisions.annotate(day=TruncDate("predicted_at"))
        .values("day")
        .annotate(n=Count("id"))
        .order_by("day")
    )
    mix = decisions.values("prediction").annotate(n=Count("id")).order_by("-n")
    summary = decisions.aggregate(
        n=Count("id"),
        scored=Count("score"),
        mean=Avg("score"),
        low=Min("score"),
        high=Max("score"),
        first=Min("predicted_at"),
        last=Max("predicted_at"),
    )
    total = summary["n"]
    mix_rows = [
        {"prediction": _label(row["prediction"]), "decisions": row["n"], "share": row["n"] / total}
        for row in mix
    ]
    mix_rows.sort(key=lambda row: (-row["decisions"], row["prediction"]))
    return {
        "decisions": total,
        "first_decision_at": _time_or_none(summary["first"]),
        "last_decision_at": _time_or_none(summary["last"]),
        "per_day": [{"day": row["day"].isoformat(), "decisions": row["n"]} for row in per_day],
        "prediction_mix": mix_rows,
        "score": {
            "scored": summary["scored"],
            "mean": summary["mean"],
            "min": summary["low"],
            "max": summary["high"],
            "histogram": _score_histogram(decisions),
        },
        "outcomes": _outcome_metrics(ctx),
        # Per window: its decisions, and performance where enough outcomes arrived.
        **_windowed(ctx, periods.performance_windows),
        "min_outcomes_per_class": periods.minimums()["outcomes_per_class"],
    }


def _score_histogram(decisions: QuerySet) -> list[dict[str, Any]]:
    return [
        {"from": i / SCORE_BINS, "to": (i + 1) / SCORE_BINS, "decisions": n}
        for i, n in enumerate(score_counts(decisions))
    ]


def _outcome_metrics(ctx: _Context) -> dict[str, Any] | None:
    """Performance on the decisions whose ground truth arrived (the latest outcome counts),
    from the period's rows as monitoring fetched them (an outcome is never null: the
    target's label_error refuses it)."""
    period = ctx.period
    pairs = [
        (prediction, score, outcome)
        for prediction, score, outcome in zip(
            period.predictions, period.scores, period.outcomes, strict=True
        )
        if outcome is not None
    ]
    if not pairs:
        return None
    from sklearn import metrics

    if ctx.schema.target.type == "regression":
        truth = [float(o) for _, _, o in pairs]
        predicted = [float(p) for p, _, _ in pairs]
        return {
            "with_outcome": len(pairs),
            "mae": float(metrics.mean_absolute_error(truth, predicted)),
            "rmse": float(metrics.root_mean_squared_error(truth, predicted)),
            "r2": float(metrics.r2_score(truth, predicted)) if len(pairs) > 1 else None,
        }
    positive = ctx.schema.target.positive_class
    truth = [o == positive for _, _, o in pairs]
    predicted = [p == positive for p, _, _ in pairs]
    scored = [(t, s) for t, (_, s, _) in zip(truth, pairs, strict=True) if s is not None]
    auc = None
    if scored and len({t for t, _ in scored}) == 2:
        auc = float(metrics.roc_auc_score([t for t, _ in scored], [s for _, s in scored]))
    return {
        "with_outcome": len(pairs),
        "positive_class": positive,
        "accuracy": float(metrics.accuracy_score(truth, predicted)),
        "precision": float(metrics.precision_score(truth, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(truth, predicted, zero_division=0)),
        "roc_auc": auc,
    }


# --- 4. explanations ----------------------------------------------------------------


def explanations(ctx: _Context) -> dict[str, Any]:
    total = ctx.total
    by_status = {
        (row["method"], row["status"]): row["n"]
        for row in ctx.explanations.values("method", "status").annotate(n=Count("id"))
    }
    # Per method, one query: the durations of the done ones, SHAP's additivity failures.
    done = {
        row["method"]: row
        for row in ctx.explanations.filter(status=Explanation.DONE)
        .values("method")
        .annotate(
            mean=Avg("result__duration_ms"),
            longest=Max("result__duration_ms"),
            additivity_failures=Count("id", filter=Q(result__quality__additivity_ok=False)),
        )
        .order_by()
    }
    methods = {}
    for method in ("shap", "lime"):
        timing = done.get(method) or {"mean": None, "longest": None}
        counts = {s: by_status.get((method, s), 0) for s, _ in Explanation.STATUSES}
        methods[method] = {
            **counts,
            "coverage": counts[Explanation.DONE] / total if total else None,
            "mean_ms": timing["mean"],
            "max_ms": timing["longest"],
        }
    shap_done = ctx.explanations.filter(method="shap", status=Explanation.DONE)
    importance, top_reasons = _shap_figures(ctx, shap_done)
    return {
        "decisions": total,
        "methods": methods,
        "additivity_failures": (done.get("shap") or {}).get("additivity_failures", 0),
        "failures": _failures(ctx),
        "global_importance": importance,
        "top_reasons": top_reasons,
        "shap_lime_agreement": _agreement(ctx),
    }


def _failures(ctx: _Context) -> list[dict[str, Any]]:
    rows = (
        ctx.explanations.filter(status=Explanation.FAILED)
        .values("method", "error")
        .annotate(n=Count("id"))
        .order_by("-n", "method", "error")[:TOP_ERRORS]
    )
    return [
        {"method": row["method"], "error": row["error"][:300], "explanations": row["n"]}
        for row in rows
    ]


def _shap_figures(ctx: _Context, shap_done: QuerySet) -> tuple[list[dict], list[dict]]:
    """Mean |SHAP| per feature and how often each feature is among the top 3, in one pass
    over the done SHAP results' packed attributions, in chunks with NumPy: summed, and
    ranked as the engine ranks them (explain.ranking.rank_rows)."""
    names = ctx.schema.names
    totals, count, explained = np.zeros(len(names)), 0, 0
    counts: Counter[str] = Counter()
    rows = shap_done.values_list("result__attributions", flat=True).iterator(IMPORTANCE_CHUNK)
    for chunk in iter(lambda: list(itertools.islice(rows, IMPORTANCE_CHUNK)), []):
        explained += len(chunk)
        packed = [attributions for attributions in chunk if attributions is not None]
        matrix = unpack_matrix(packed, len(names))
        totals += np.abs(matrix).sum(axis=0)
        count += len(packed)
        for top in rank_rows(matrix, names, TOP_REASON_POSITIONS):
            counts.update(top)
    importance = [
        {"feature": name, "label": ctx.labels[name], "mean_abs_shap": float(totals[i] / count)}
        for i, name in enumerate(names)
        if count
    ]
    importance.sort(key=lambda row: (-row["mean_abs_shap"], row["feature"]))
    reasons = [
        {
            "feature": name,
            "label": ctx.labels.get(name, name),
            "explanations": n,
            "share": n / explained if explained else None,
        }
        for name, n in counts.items()
    ]
    reasons.sort(key=lambda row: (-row["explanations"], row["feature"]))
    return importance, reasons


def _agreement(ctx: _Context) -> dict[str, Any]:
    lime_done = ctx.explanations.filter(method="lime", status=Explanation.DONE)
    figures = lime_done.aggregate(
        compared=Count("id", filter=Q(agreement__top_k_overlap__isnull=False)),
        overlap=Avg(Cast(KeyTextTransform("top_k_overlap", "agreement"), FloatField())),
        correlation=Avg(Cast(KeyTextTransform("rank_correlation", "agreement"), FloatField())),
        # The review rule's own verdict, stored with the figures (reviews.rules).
        judged=Count("id", filter=Q(agreement__judged=True)),
        disagreeing=Count("id", filter=Q(agreement__agrees=False)),
    )
    return {
        "compared": figures["compared"],
        "mean_top_k_overlap": figures["overlap"],
        "mean_rank_correlation": figures["correlation"],
        "judged": figures["judged"],
        "disagreeing": figures["disagreeing"],
    }


# --- 5 and 6. drift and fairness (auditapp/monitoring) -----------------------------------


def _window_metrics(ctx: _Context) -> dict[str, Any] | str:
    """The monitoring app's figures for the period, or why they are not available."""
    if not hasattr(ctx, "_metrics"):
        try:
            (metrics,) = compute_windows_metrics(
                ctx.model_version, ctx.period, [(ctx.start, ctx.end)]
            )
            if isinstance(metrics, Exception):
                raise metrics
            ctx._metrics = metrics
        except Exception as exc:  # the rest of the report stands without sections 5-6
            log.exception("reports.monitoring.failed model_version=%s", ctx.model_version.pk)
            ctx._metrics = f"the monitoring figures could not be computed ({exc})"
        _done_with_period(ctx)
    return ctx._metrics


def _period_windows(ctx: _Context) -> list[periods.Window] | str:
    """The monitoring app's figures for each window of the period (periods.py), or why not."""
    if not hasattr(ctx, "_windows"):
        try:
            ctx._windows = periods.compute_windows(
                ctx.model_version,
                ctx.start,
                ctx.end,
                ctx.now,
                ctx.first_decision,
                fetch=lambda: ctx.period,
            )
        except Exception as exc:  # the pooled figures and the rest of the report stand
            log.exception("reports.windows.failed model_version=%s", ctx.model_version.pk)
            ctx._windows = f"the figures per window could not be computed ({exc})"
        _done_with_period(ctx)
    return ctx._windows


def _done_with_period(ctx: _Context) -> None:
    """Lets the period's rows go once the pooled and the per-window figures are computed
    (a million decisions' inputs hold gigabytes)."""
    if hasattr(ctx, "_metrics") and hasattr(ctx, "_windows"):
        ctx.__dict__.pop("period", None)


def _windowed(ctx: _Context, rows: Callable[[list[periods.Window]], list]) -> dict[str, Any]:
    """{"window": day | week, "windows": [...]}, with "windows_reason" when not available."""
    windows = _period_windows(ctx)
    if isinstance(windows, str):
        return {"window": ctx.window, "windows": [], "windows_reason": windows}
    return {"window": ctx.window, "windows": rows(windows)}


def drift(ctx: _Context) -> dict[str, Any]:
    """Pooled over the period (the old keys, `available` saying whether they could be
    computed) and per window, with the verdict that names what drifted when."""
    metrics = _window_metrics(ctx)
    pooled = {} if isinstance(metrics, str) else metrics
    inputs = pooled.get("drift") or {}
    score = pooled.get("score_drift") or {}
    pooled_drifted = [ctx.labels.get(name, name) for name, s in inputs.items() if s.get("drifted")]
    if score.get("drifted"):
        pooled_drifted.append("the scores")
    windowed = _windowed(ctx, periods.drift_windows)
    findings = periods.drift_findings(windowed["windows"], ctx.labels)
    verdict = (
        periods.drift_verdict(
            ctx.window, windowed["windows"], findings, None if not pooled else pooled_drifted
        )
        if "windows_reason" not in windowed
        else f"Not judged per {ctx.window}: {windowed['windows_reason']}."
    )
    figures = {
        "verdict": verdict,
        "drifted": findings,
        **windowed,
        "min_decisions_per_window": periods.minimums()["drift"],
    }
    if isinstance(metrics, str):
        return {"available": False, "reason": metrics, **figures}
    return {
        "available": True,
        "decisions": metrics.get("decisions"),
        "inputs": inputs,
        "score": score,
        "attributions": metrics.get("attribution_drift") or {},
        "pooled_drifted": pooled_drifted,
        **figures,
    }


def fairness(ctx: _Context) -> dict[str, Any]:
    protected = [f.name for f in ctx.schema.features if f.protected]
    metrics = _window_metrics(ctx)
    by_feature = {} if isinstance(metrics, str) else metrics.get("fairness") or {}
    windowed = _windowed(ctx, periods.fairness_windows)
    figures = {
        "verdict": periods.fairness_verdict(
            ctx.window, windowed["windows"], by_feature, protected, ctx.labels
        ),
        **windowed,
        "min_decisions_per_window": periods.minimums()["fairness"],
    }
    if isinstance(metrics, str):
        return {"available": False, "reason": metrics, "protected_features": protected, **figures}
    return {
        "available": True,
        "protected_features": protected,
        "by_feature": by_feature,
        "performance": metrics.get("performance"),
        **figures,
    }


# --- 7. monitoring alerts ----------------------------------------------------------------


def monitoring_alerts(ctx: _Context) -> dict[str, Any]:
    """Every alert of the version raised in the period, open during it, or about one of its
    windows (a day's alert is raised once the day is over: after a period ending with it)."""
    found = (
        Alert.objects.filter(model_version=ctx.model_version)
        .filter(
            Q(raised_at__lt=ctx.end, resolved_at=None)
            | Q(raised_at__lt=ctx.end, resolved_at__gte=ctx.start)
            | Q(snapshot__window_start__lt=ctx.end, snapshot__window_end__gt=ctx.start)
        )
        .select_related("rule", "snapshot", "acknowledged_by")
        .order_by("raised_at", "id")
    )
    rows = [_alert_row(ctx, alert) for alert in found]
    return {
        "total": len(rows),
        "raised_in_period": sum(row["raised_in_period"] for row in rows),
        "active_now": sum(row["state"] != Alert.RESOLVED for row in rows),
        "alerts": rows,
        "note": "Alerts are judged by monitoring on its own windows (alert rules, README: "
        "Monitoring). The state is the alert's when the report was generated.",
    }


METRIC_LABELS = dict(AlertRule.METRICS)
COMPARISON_SIGNS = dict(AlertRule.COMPARISONS)


def _alert_row(ctx: _Context, alert: Alert) -> dict[str, Any]:
    snapshot = alert.snapshot
    return {
        "alert_id": alert.pk,
        "rule": alert.rule.name,
        "metric": alert.metric,
        "metric_label": METRIC_LABELS.get(alert.metric, alert.metric),
        "subject": alert.subject or None,
        "subject_label": ctx.labels.get(alert.subject, alert.subject) or None,
        "comparison": COMPARISON_SIGNS.get(alert.comparison, alert.comparison),
        "threshold": alert.threshold,
        "value": alert.value,
        "last_value": alert.last_value,
        "state": alert.state,
        "raised_at": canonical_time(alert.raised_at),
        "raised_in_period": ctx.start <= alert.raised_at < ctx.end,
        "window_start": _time_or_none(snapshot.window_start if snapshot else None),
        "window_end": _time_or_none(snapshot.window_end if snapshot else None),
        "acknowledged_by": alert.acknowledged_by.get_username() if alert.acknowledged_by else None,
        "acknowledged_at": _time_or_none(alert.acknowledged_at),
        "resolved_at": _time_or_none(alert.resolved_at),
        "message": alert.message,
    }


# --- 7. human oversight ------------------------------------------------------------------


def oversight(ctx: _Context) -> dict[str, Any]:
    """The figures of reviews/stats.py (same definitions), for the period's decisions only."""
    in_period = {"decision__in": ctx.decisions}
    feedback = Feedback.objects.filter(**in_period)
    cases = ReviewCase.objects.filter(**in_period)
    verdicts = feedback.aggregate(total=Count("id"), agree=Count("id", filter=Q(verdict="agree")))
    resolved = cases.filter(state=ReviewCase.RESOLVED)
    resolution = resolved.aggregate(
        total=Count("id"), overridden=Count("id", filter=Q(resolution=ReviewCase.OVERRIDDEN))
    )
    hours = [
        (done - opened).total_seconds() / 3600
        for opened, done in resolved.values_list("opened_at", "resolved_at")[:20_000]
    ]
    reviewed = (
        ctx.decisions.filter(Q(feedback__isnull=False) | Q(review_cases__state=ReviewCase.RESOLVED))
        .distinct()
        .count()
    )
    total = ctx.total
    return {
        "decisions": total,
        "reviewed": reviewed,
        "share_reviewed": reviewed / total if total else None,
        "feedback": verdicts["total"],
        "agreement_rate": verdicts["agree"] / verdicts["total"] if verdicts["total"] else None,
        "cases": cases.count(),
        "resolved_cases": resolution["total"],
        "override_rate": resolution["overridden"] / resolution["total"]
        if resolution["total"]
        else None,
        "median_hours_to_resolve": statistics.median(hours) if hours else None,
        "open_cases": cases.unresolved().count(),
        "open_by_age": _open_by_age(cases),
        **_queue_throughput(ctx),
    }


def _queue_throughput(ctx: _Context) -> dict[str, Any]:
    """The review queue in the period, for every case on the version's decisions (whenever
    decided): opened, resolved, open at the end, median time to resolve; and per window."""
    cases = ReviewCase.objects.filter(decision__model_version=ctx.model_version)
    windows = periods.period_windows(ctx.start, ctx.end, ctx.now, ctx.first_decision)
    counts = _case_counts(cases, [(ctx.start, ctx.end), *[(w[0], w[1]) for w in windows]])
    resolved = cases.filter(
        state=ReviewCase.RESOLVED, resolved_at__gte=ctx.start, resolved_at__lt=ctx.end
    )
    hours = [
        (done - opened).total_seconds() / 3600
        for opened, done in resolved.values_list("opened_at", "resolved_at")[:20_000]
    ]
    return {
        "queue": {
            **counts[0],
            "median_hours_to_resolve": statistics.median(hours) if hours else None,
            "note": "Every review case on this version's decisions, whenever decided, "
            "opened or resolved in the period; open at the end of it.",
        },
        "window": ctx.window,
        "windows": [
            {
                "window_start": canonical_time(low),
                "window_end": canonical_time(high),
                "label": formatting.span(low, high),
                "partial": partial,
                **figures,
            }
            for (low, high, partial), figures in zip(windows, counts[1:], strict=True)
        ],
    }


def _case_counts(cases: QuerySet, bounds: list[tuple[datetime, datetime]]) -> list[dict]:
    """Cases opened, resolved in, and open at the end of each [low, high).

    The cases' times are read once and counted per window by binary search: a report over
    years has hundreds of windows, and as conditional SQL aggregates (three a window) the
    statements alone took two seconds to build.
    """
    opened, resolved, closed = [], [], []
    for opened_at, state, resolved_at in cases.values_list("opened_at", "state", "resolved_at"):
        opened.append(_micros(opened_at))
        if state == ReviewCase.RESOLVED and resolved_at is not None:
            resolved.append(_micros(resolved_at))
            closed.append(max(_micros(opened_at), _micros(resolved_at)))
    opened_sorted, resolved_sorted, closed_sorted = (
        np.sort(np.array(times, dtype=np.int64)) for times in (opened, resolved, closed)
    )

    def before(times: np.ndarray, moment: datetime) -> int:
        return int(np.searchsorted(times, _micros(moment), side="left"))

    return [
        {
            "opened": before(opened_sorted, high) - before(opened_sorted, low),
            "resolved": before(resolved_sorted, high) - before(resolved_sorted, low),
            # Open at `high`: opened before it, and not resolved before it.
            "open_at_end": before(opened_sorted, high) - before(closed_sorted, high),
        }
        for low, high in bounds
    ]


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (a float timestamp rounds at this size)."""
    return (moment - EPOCH) // MICROSECOND


def _open_by_age(cases: QuerySet) -> list[dict[str, Any]]:
    now = timezone.now()
    unresolved = cases.unresolved()
    rows, newer_than = [], None
    for label, age in AGE_BUCKETS:  # buckets: under a day, 1-7 days, over a week
        bucket = unresolved
        if age is not None:
            bucket = bucket.filter(opened_at__gt=now - age)
        if newer_than is not None:
            bucket = bucket.filter(opened_at__lte=now - newer_than)
        rows.append({"age": label, "cases": bucket.count()})
        newer_than = age
    return rows


# --- 8. access and security --------------------------------------------------------------


def access(ctx: _Context) -> dict[str, Any]:
    """Who viewed and exported what about this version during the period; failed authorisations."""
    version = ctx.model_version
    name = version.registered_model.name
    events = AuditEvent.objects.filter(at__gte=ctx.start, at__lt=ctx.end)
    about = events.filter(
        Q(object_type="decisions.decision", object_id__in=_version_decisions(version, events))
        | Q(object_type="registry.modelversion", object_id=str(version.pk))
        | Q(object_type="reports.report", details__model=name, details__version=version.version)
        | Q(action__in=["decisions.searched", "decisions.exported"], details__params__model=name)
        | Q(action="labelled_data.exported", details__model=name)
    )
    by_actor = (
        about.values("actor_name", "action")
        .annotate(n=Count("id"))
        .order_by("actor_name", "action")
    )
    denied = events.filter(action="access.denied")
    denials = denied.values("actor_name").annotate(n=Count("id")).order_by("-n", "actor_name")
    return {
        "events": about.count(),
        "by_actor": [
            {"actor": row["actor_name"] or "anonymous", "action": row["action"], "events": row["n"]}
            for row in by_actor
        ],
        "failed_authorisations": denied.count(),
        "failed_authorisations_by_actor": [
            {"actor": row["actor_name"] or "anonymous", "events": row["n"]} for row in denials
        ],
        "failed_logins": events.filter(action="auth.login_failed").count(),
        "note": "Failed authorisations and logins are counted across the application "
        "for the period: a refused request does not reveal which model it was after.",
    }


def _version_decisions(version: ModelVersion, events: QuerySet) -> list[str]:
    """The object ids, as AuditEvent.object_id holds them, of the decisions of this version
    that the period's events are about: the events' few ids looked up among the decisions,
    rather than every decision of the version (a million) cast to text to match them."""
    named = events.filter(object_type="decisions.decision").values_list("object_id", flat=True)
    ids = sorted({int(text) for text in named.distinct() if _an_id(text)})
    found: list[str] = []
    for first in range(0, len(ids), ID_LOOKUP_CHUNK):
        chunk = ids[first : first + ID_LOOKUP_CHUNK]
        mine = Decision.objects.served().filter(model_version=version, pk__in=chunk)
        found += [str(pk) for pk in mine.values_list("pk", flat=True)]
    return found


def _an_id(text: str) -> bool:
    """Whether an object_id is a decision id's text as Cast(id, CharField) writes it."""
    return text.isascii() and text.isdigit() and str(int(text)) == text and len(text) < 19


# --- 9. integrity --------------------------------------------------------------------------


def integrity(ctx: _Context) -> dict[str, Any]:
    """The period's decisions verified against the sealed log (verification.verify_period:
    `checked` and `not_checked` say exactly what), on the primary: verification answers
    for what has been written, not for a replica's copy. The latest verification of the
    whole log (a `chain.verified` audit event, itself in the log) is named beside it."""
    with on_primary():
        result = verification.verify_period(ctx.model_version.pk, ctx.start, ctx.end)
    seal = sealing.latest_seal()
    last_sealed = (seal.last_decision_id or 0) if seal else 0
    counts = ctx.decisions.aggregate(
        n=Count("id"), sealed=Count("id", filter=Q(id__lte=last_sealed))
    )
    return {
        "ok": result.ok,
        "checked": verification.PERIOD_SCOPE,
        "not_checked": verification.PERIOD_NOT_CHECKED,
        "decisions_checked": result.decisions,
        "seals_checked": result.seals,
        "first_bad": result.first_bad,
        "period_decisions": counts["n"],
        "period_decisions_sealed": counts["sealed"],
        "period_decisions_unsealed": counts["n"] - counts["sealed"],
        "latest_seal_root_hash": seal.root_hash if seal else None,
        "latest_whole_log_verification": _latest_whole_log_verification(),
    }


def _latest_whole_log_verification() -> dict[str, Any] | None:
    """The last verify_chain run recorded (job, command or API): when, by whom, its result."""
    event = (
        AuditEvent.objects.filter(action=verification.VERIFIED_EVENT).order_by("-at", "-id").first()
    )
    if event is None:
        return None
    details = event.details or {}
    return {
        "at": canonical_time(event.at),
        "by": event.actor_name or None,
        "ok": details.get("ok"),
        "decisions": details.get("decisions"),
        "events": details.get("events"),
        "seals": details.get("seals"),
        "audit_event_id": event.pk,
    }


# --- 10. appendix --------------------------------------------------------------------------


def appendix(ctx: _Context) -> dict[str, Any]:
    """A reproducible sample: the decisions of the period with the smallest content hashes."""
    sample = list(
        ctx.decisions.order_by("content_hash", "id").values(
            "id", "request_id", "predicted_at", "prediction", "score", "content_hash"
        )[:APPENDIX_SAMPLE]
    )
    shap = {
        e["decision_id"]: e
        for e in Explanation.objects.filter(
            decision_id__in=[d["id"] for d in sample], method="shap"
        ).values("decision_id", "status", "result__attributions")
    }
    # A report is read by roles that may not see sensitive inputs, and one
    # decision's attribution is a function of its value: those are left out here
    # (the aggregate sections keep them).
    sensitive = ctx.schema.sensitive_names
    rows = []
    for decision in sample:
        explanation = shap.get(decision["id"], {})
        done = explanation.get("status") == Explanation.DONE
        if done:
            explanation["attributions"] = {
                k: v
                for k, v in unpack(explanation["result__attributions"], ctx.schema.names).items()
                if k not in sensitive
            }
        reasons = adverse_reasons(ctx.schema, explanation["attributions"], {}) if done else []
        rows.append(
            {
                "decision_id": decision["id"],
                "request_id": decision["request_id"],
                "predicted_at": canonical_time(decision["predicted_at"]),
                "prediction": _label(decision["prediction"]),
                "score": decision["score"],
                "content_hash": decision["content_hash"],
                "shap_status": explanation.get("status", "missing"),
                "main_reasons": "; ".join(r.label for r in reasons),
                "attributions": explanation["attributions"] if done else None,
            }
        )
    return {
        "sample_size": len(rows),
        "method": "smallest content hashes",
        "sensitive_features_left_out": sorted(sensitive),
        "decisions": rows,
    }


SECTIONS: list[tuple[str, Callable[[_Context], dict[str, Any]]]] = [
    ("cover", cover),
    ("model_identity", model_identity),
    ("volumes", volumes),
    ("explanations", explanations),
    ("drift", drift),
    ("fairness", fairness),
    ("alerts", monitoring_alerts),
    ("oversight", oversight),
    ("access", access),
    ("integrity", integrity),
    ("appendix", appendix),
]
SECTION_TITLES = {
    "cover": "1. Cover",
    "model_identity": "2. Model identity",
    "volumes": "3. Volumes and outcomes",
    "explanations": "4. Explanations",
    "drift": "5. Drift",
    "fairness": "6. Fairness",
    "alerts": "7. Monitoring alerts",
    "oversight": "8. Human oversight",
    "access": "9. Access and security",
    "integrity": "10. Integrity attestation",
    "appendix": "11. Appendix: sample decisions",
}


def _label(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _time_or_none(moment: datetime | None) -> str | None:
    return canonical_time(moment) if moment else None
