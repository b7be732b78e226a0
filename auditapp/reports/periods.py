"""The report's period told as it happened: cut into windows, each with its own figures.

Pooled over a month, a shift on its last day is diluted to nothing (a PSI of 0.016 for
the period while that day's was 0.262), and so is a day's unfairness. So the report cuts
the period into day windows (periods up to 31 days) or week windows (longer; weeks start
on Monday, as monitoring's), clipped to the period: a first or last window that the
period cuts short, one not over yet, or one the version's first decision came after the
start of, is `partial`. Each window's figures are monitoring's own (its stored snapshot
of the window when that still holds, else `compute_windows_metrics` on the period's rows,
fetched once and split by window), and a window is judged only on the evidence
monitoring's alert rules need (alerts.enough_evidence): below it, the window says
"too few decisions" instead of a figure.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max
from django.db.models.functions import Trunc

from auditapp import formatting
from auditapp.decisions.models import Decision, Outcome
from auditapp.hashing import canonical_time
from auditapp.monitoring import alerts, thresholds
from auditapp.monitoring.documents import SnapshotDocument
from auditapp.monitoring.metrics import Period, compute_windows_metrics, fetch_period
from auditapp.monitoring.models import DAY, WEEK, MetricSnapshot, MonitoringSettings
from auditapp.monitoring.windows import split_period, window_floor

log = logging.getLogger(__name__)

DAY_WINDOWS_UP_TO = timedelta(days=31)  # longer periods are told week by week
NOUNS = {DAY: ("day", "days"), WEEK: ("week", "weeks")}
SHOWN_PER_FEATURE = 3  # windows named in a verdict per feature; the rest are counted
PERFORMANCE_FIGURES = ("accuracy", "precision", "recall", "f1", "roc_auc", "roc_auc_drop")
REGRESSION_FIGURES = ("mae", "rmse", "r2")


@dataclass
class Window:
    start: datetime
    end: datetime
    partial: bool
    metrics: dict[str, Any]
    error: str | None = None  # why monitoring could not compute this window's figures
    snapshot_id: int | None = None  # the stored monitoring snapshot its figures come from

    @property
    def document(self) -> SnapshotDocument:
        return SnapshotDocument.from_document(self.metrics)

    @property
    def decisions(self) -> int:
        return int(self.metrics.get("decisions") or 0)

    @property
    def label(self) -> str:
        return formatting.span(self.start, self.end)

    def base(self) -> dict[str, Any]:
        """What every section's entry for this window starts with."""
        return {
            "window_start": canonical_time(self.start),
            "window_end": canonical_time(self.end),
            "label": self.label,
            "partial": self.partial,
            "decisions": self.decisions,
            "monitoring_snapshot": self.snapshot_id,
        }


def window_kind(start: datetime, end: datetime) -> str:
    return DAY if end - start <= DAY_WINDOWS_UP_TO else WEEK


def period_windows(
    start: datetime, end: datetime, now: datetime, first_decision: datetime | None = None
) -> list[tuple]:
    """(start, end, partial) of each window: partial when the period cuts it short, when
    it is not over at `now`, or when the version's first decision came after it began (as
    monitoring marks its windows: monitoring.coverage)."""
    return [
        (
            low,
            high,
            partial or high > now or (first_decision is not None and low < first_decision < high),
        )
        for low, high, partial in split_period(window_kind(start, end), start, end)
    ]


def compute_windows(
    model_version,
    start: datetime,
    end: datetime,
    now: datetime,
    first_decision: datetime | None,
    fetch: Callable[[], Period] | None = None,
) -> list[Window]:
    """Monitoring's figures for each window (the reference is loaded once, and cached).

    Decisions are first counted per window in one query: a window too small for any figure
    to be judged is not computed at all (a long period of quiet weeks costs one query, not
    four per week), and says "too few decisions" as any other would. A whole day or week
    that monitoring has already computed, and that nothing has changed since (stored_windows),
    is read from its snapshot: the figures the monitoring pages and alerts show for it. The
    others are computed from the period's rows, fetched once (`fetch`, else here) and split
    by window: one query, not one per window.
    """
    kind = window_kind(start, end)
    counts = decisions_per_window(model_version, kind, start, end)
    least = min(minimums().values())
    busy = any(n >= least for n in counts.values())
    stored = stored_windows(model_version, kind, start, end, counts) if busy else {}
    windows: list[Window] = []
    todo: list[Window] = []  # computed below, all at once
    for low, high, partial in period_windows(start, end, now, first_decision):
        decisions = counts.get(window_floor(kind, low), 0)
        if decisions < least:
            windows.append(Window(low, high, partial, {"decisions": decisions}))
        elif not partial and low in stored:
            snapshot_id, metrics = stored[low]
            windows.append(Window(low, high, partial, metrics, snapshot_id=snapshot_id))
        else:
            todo.append(Window(low, high, partial, {"decisions": decisions}))
            windows.append(todo[-1])
    if todo:
        _compute(
            model_version, todo, fetch or (lambda: fetch_period(model_version, start, end, kind))
        )
    return windows


def decisions_per_window(model_version, kind: str, start: datetime, end: datetime) -> dict:
    """{window start (UTC, unclipped): decisions} of the period, counted by the database."""
    rows = (
        Decision.objects.served()
        .filter(model_version=model_version, predicted_at__gte=start, predicted_at__lt=end)
        .annotate(window=Trunc("predicted_at", kind, tzinfo=UTC))
        .values("window")
        .annotate(n=Count("id"))
        .values_list("window", "n")
    )
    return {window_floor(kind, moment): n for moment, n in rows}


def stored_windows(model_version, kind: str, start: datetime, end: datetime, counts: dict):
    """{window start: (snapshot id, figures)} of the period's finished day or week snapshots
    that still hold: computed after the version's monitoring settings last changed (its
    reference), after the last outcome recorded for the window's decisions, over the same
    number of decisions as the window has now (none arrived late), by a monitoring that
    wrote every figure this report reads. Three queries, whatever the number of windows."""
    settings_changed = (
        MonitoringSettings.objects.filter(model_version=model_version)
        .values_list("updated_at", flat=True)
        .first()
    )
    if settings_changed is None:
        return {}
    last_outcome = dict(
        Outcome.objects.filter(
            decision__model_version=model_version,
            decision__predicted_at__gte=start,
            decision__predicted_at__lt=end,
        )
        .annotate(window=Trunc("decision__predicted_at", kind, tzinfo=UTC))
        .values("window")
        .annotate(last=Max("recorded_at"))
        .values_list("window", "last")
    )
    last_outcome = {window_floor(kind, moment): last for moment, last in last_outcome.items()}
    snapshots = MetricSnapshot.objects.filter(
        model_version=model_version,
        window=kind,
        status=MetricSnapshot.DONE,
        window_start__gte=start,
        window_end__lte=end,
        computed_at__gte=settings_changed,
    ).values_list("pk", "window_start", "decisions", "computed_at", "data")
    fresh = {}
    for pk, low, decisions, computed_at, data in snapshots:
        outcome = last_outcome.get(low)
        if (
            decisions == counts.get(low, 0)
            and (outcome is None or outcome <= computed_at)
            and (data or {}).keys() >= STORED_KEYS
        ):
            fresh[low] = (pk, data)
    return fresh


# What a stored snapshot must hold to stand for a window here (an older monitoring's lacks some).
STORED_KEYS = frozenset({"decisions", "drift", "score_drift", "performance", "fairness"})


def _compute(model_version, windows: list[Window], fetch: Callable[[], Period]) -> None:
    """Monitoring's figures into each window; a window monitoring cannot compute says why,
    and the others stand."""
    try:
        bounds = [(window.start, window.end) for window in windows]
        results: list = compute_windows_metrics(model_version, fetch(), bounds)
    except Exception as exc:
        results = [exc] * len(windows)
    for window, result in zip(windows, results, strict=True):
        if isinstance(result, Exception):
            log.warning(
                "reports.window.failed model_version=%s start=%s",
                model_version.pk,
                window.start,
                exc_info=result,
            )
            window.error = f"{type(result).__name__}: {result}"
        else:
            window.metrics = result


def nouns(kind: str) -> tuple[str, str]:
    return NOUNS[kind]


def minimums() -> dict[str, int]:
    """The evidence a window needs to be judged (monitoring's settings), stated in the
    document: a reader of the JSON knows why a window says "too few decisions"."""
    return {
        "drift": settings.ATTEST_MONITORING_MIN_DRIFT_DECISIONS,
        "fairness": settings.ATTEST_MONITORING_MIN_DECISIONS,
        "outcomes_per_class": settings.ATTEST_MONITORING_MIN_OUTCOMES_PER_CLASS,
    }


# --- evidence: monitoring's minimums -----------------------------------------------------------


def drift_gap(window: Window) -> str | None:
    """Why a window's drift is not judged (None: it is)."""
    return _gap(window, settings.ATTEST_MONITORING_MIN_DRIFT_DECISIONS, "drift", "input_drift_psi")


def fairness_gap(window: Window) -> str | None:
    least = settings.ATTEST_MONITORING_MIN_DECISIONS
    return _gap(window, least, "fairness", "disparate_impact_ratio")


def _gap(window: Window, least: int, judged: str, metric: str) -> str | None:
    if window.decisions < least:
        return f"too few decisions ({window.decisions:,}; {judged} is judged on {least:,} or more)"
    if window.error:
        return f"could not be computed ({window.error})"
    if alerts.enough_evidence(metric, window.document, window.decisions):
        return None
    return "not enough evidence"  # (a minimum monitoring adds later than this report)


def performance_gap(window: Window) -> str | None:
    least = settings.ATTEST_MONITORING_MIN_OUTCOMES_PER_CLASS
    if window.decisions < least:
        return (
            f"too few decisions ({window.decisions:,}; performance is judged on {least:,} or "
            "more outcomes of each class)"
        )
    if window.error:
        return f"could not be computed ({window.error})"
    document = window.document
    if alerts.enough_evidence("roc_auc", document, window.decisions):
        return None
    outcomes = document.performance.outcomes if document.performance else 0
    if outcomes == 0:
        return "no outcome recorded yet"
    return (
        f"too few outcomes ({outcomes:,}; performance is judged on {least:,} or more of each class)"
    )


# --- drift ---------------------------------------------------------------------------------


def drift_windows(windows: list[Window]) -> list[dict[str, Any]]:
    rows = []
    for window in windows:
        gap = drift_gap(window)
        entry = {**window.base(), "judged": gap is None, "reason": gap, "inputs": None}
        entry["score"] = None
        if gap is None:
            entry["inputs"] = {
                name: {
                    "psi": stats.get("psi"),
                    "p_value": stats.get("ks_p", stats.get("chi2_p")),
                    "drifted": bool(stats.get("drifted")),
                }
                for name, stats in (window.metrics.get("drift") or {}).items()
            }
            score = window.metrics.get("score_drift") or {}
            if score:
                entry["score"] = {
                    "psi": score.get("psi"),
                    "p_value": score.get("ks_p"),
                    "drifted": bool(score.get("drifted")),
                    "mean": (score.get("current") or {}).get("mean"),
                    "median": (score.get("current") or {}).get("median"),
                }
        rows.append(entry)
    return rows


SCORE = "score"


def drift_findings(rows: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """Every (window, feature) that drifted, the scores as the feature "score"."""
    found = []
    for row in rows:
        candidates = list((row["inputs"] or {}).items())
        if row["score"]:
            candidates.append((SCORE, row["score"]))
        for name, stats in candidates:
            if stats["drifted"]:
                found.append(
                    {
                        "feature": name,
                        "label": "the scores" if name == SCORE else labels.get(name, name),
                        "window_start": row["window_start"],
                        "window_end": row["window_end"],
                        "window": row["label"],
                        "psi": stats["psi"],
                        "p_value": stats["p_value"],
                    }
                )
    return found


def drift_verdict(
    kind: str, rows: list[dict], findings: list[dict], pooled_drifted: list[str] | None
) -> str:
    """The section's verdict: which feature drifted when, by how much; then the pooled view
    (`pooled_drifted` None: the pooled figures could not be computed)."""
    one, _ = nouns(kind)
    judged = [row for row in rows if row["judged"]]
    unjudged = len(rows) - len(judged)
    sentences = []
    if not judged:
        least = settings.ATTEST_MONITORING_MIN_DRIFT_DECISIONS
        sentences.append(
            f"No {one} had enough decisions to judge drift ({least:,} or more); only the "
            "pooled figures speak for the period."
        )
    elif findings:
        windows = len({f["window_start"] for f in findings})
        sentences.append(
            f"Drift in {windows} of the {_count(len(judged), kind)} judged: "
            f"{_drift_phrases(kind, findings)}."
        )
    else:
        sentences.append(
            f"No drift in the inputs or the scores in any of the {_count(len(judged), kind)} "
            "judged."
        )
    if unjudged and judged:
        sentences.append(
            f"{_count(unjudged, kind).capitalize()} could not be judged ({_why(rows)})."
        )
    if pooled_drifted is None:
        sentences.append("The figures pooled over the whole period could not be computed.")
    elif pooled_drifted:
        sentences.append(f"Pooled over the whole period: {_and(pooled_drifted)} drifted.")
    elif judged:
        sentences.append(
            "Pooled over the whole period no input drifted"
            + (": pooling dilutes a shift confined to part of the period." if findings else ".")
        )
    return " ".join(sentences)


def _count(n: int, kind: str) -> str:
    one, many = nouns(kind)
    return f"{n:,} {one if n == 1 else many}"


def _why(rows: list[dict]) -> str:
    """The reasons windows were not judged, "too few decisions" first."""
    reasons = [row["reason"] or "" for row in rows if not row["judged"]]
    too_few = sum(reason.startswith("too few") for reason in reasons)
    parts = ["too few decisions"] if too_few else []
    if too_few < len(reasons):
        parts.append("figures that could not be computed")
    return " or ".join(parts)


def _drift_phrases(kind: str, findings: list[dict]) -> str:
    by_feature: dict[str, list[dict]] = defaultdict(list)
    for finding in findings:
        by_feature[finding["label"]].append(finding)
    phrases = []
    for label, found in by_feature.items():
        figures = [(f["window"], f["psi"] or 0.0) for f in found]
        named = _the_worst(kind, figures, worst_first=True, figure=lambda psi: f"PSI {psi}")
        phrases.append(f"{label} drifted on {named}")
    return "; ".join(phrases)


def _the_worst(
    kind: str,
    figures: list[tuple[str, float]],
    worst_first: bool,
    figure: Callable[[str], str] = str,
) -> str:
    """The windows (in date order, each with its figure) of the SHOWN_PER_FEATURE worst
    figures, and the count and range of the rest: a reader acts on the worst days, which a
    list cut at the first ones could leave out."""
    shown = sorted(figures, key=lambda pair: pair[1], reverse=worst_first)[:SHOWN_PER_FEATURE]
    named = [
        f"{window} ({figure(formatting.decimal(value))})"
        for window, value in figures
        if (window, value) in shown
    ]
    rest = [value for window, value in figures if (window, value) not in shown]
    if not rest:
        return _and(named)
    low, high = formatting.decimal(min(rest)), formatting.decimal(max(rest))
    span = low if low == high else f"{low} to {high}"
    one, many = nouns(kind)
    others = f"{len(rest)} other {one if len(rest) == 1 else many}"
    return f"{_and(named)}, and on {others} ({figure(span)})"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


# --- performance ---------------------------------------------------------------------------


def performance_windows(windows: list[Window]) -> list[dict[str, Any]]:
    rows = []
    for window in windows:
        performance = window.metrics.get("performance") or {}
        gap = performance_gap(window)
        names = REGRESSION_FIGURES if "mae" in performance else PERFORMANCE_FIGURES
        rows.append(
            {
                **window.base(),
                "with_outcome": int(performance.get("outcomes") or 0),
                "judged": gap is None,
                "reason": gap,
                "performance": {name: performance.get(name) for name in names}
                if gap is None
                else None,
            }
        )
    return rows


# --- fairness ------------------------------------------------------------------------------

FAIRNESS_FIGURES = (
    "disparate_impact_ratio",
    "demographic_parity_difference",
    "equalized_odds_difference",
    "four_fifths_ok",
    "selected_class",
    "selection_rate",
    "counts",
)


def fairness_windows(windows: list[Window]) -> list[dict[str, Any]]:
    rows = []
    for window in windows:
        gap = fairness_gap(window)
        by_feature = None
        if gap is None:
            by_feature = {
                name: {key: entry.get(key) for key in FAIRNESS_FIGURES}
                for name, entry in (window.metrics.get("fairness") or {}).items()
            }
        rows.append(
            {**window.base(), "judged": gap is None, "reason": gap, "by_feature": by_feature}
        )
    return rows


def fairness_verdict(
    kind: str, rows: list[dict], pooled: dict[str, dict], protected: list[str], labels: dict
) -> str:
    """Per protected feature: the windows failing the four-fifths rule, or the lowest ratio."""
    one, _ = nouns(kind)
    judged = [row for row in rows if row["judged"]]
    if not protected:
        return ""
    if not judged:
        least = settings.ATTEST_MONITORING_MIN_DECISIONS
        return (
            f"No {one} had enough decisions to judge fairness ({least:,} or more); only the "
            "pooled figures speak for the period."
        )
    sentences = []
    for name in protected:
        label = labels.get(name, name)
        pooled_ratio = (pooled.get(name) or {}).get("disparate_impact_ratio")
        pooled_text = (
            f"pooled over the period it is {formatting.decimal(pooled_ratio)}"
            if pooled_ratio is not None
            else "pooled over the period it could not be computed"
        )
        ratios = [
            (row, (row["by_feature"].get(name) or {}).get("disparate_impact_ratio"))
            for row in judged
        ]
        ratios = [(row, r) for row, r in ratios if r is not None]
        if not ratios:
            sentences.append(f"{label}: no ratio could be computed per {one}; {pooled_text}.")
            continue
        failing = [(row, r) for row, r in ratios if r < thresholds.FOUR_FIFTHS]
        if failing:
            named = _the_worst(kind, [(row["label"], r) for row, r in failing], worst_first=False)
            sentences.append(
                f"{label}: the disparate impact ratio fails the four-fifths rule on "
                f"{named}; {pooled_text}."
            )
        else:
            row, lowest = min(ratios, key=lambda pair: pair[1])
            sentences.append(
                f"{label}: the four-fifths rule holds in every {one} judged; the lowest "
                f"disparate impact ratio is {formatting.decimal(lowest)} on {row['label']} "
                f"({pooled_text})."
            )
    unjudged = len(rows) - len(judged)
    if unjudged:
        sentences.append(
            f"{_count(unjudged, kind).capitalize()} could not be judged ({_why(rows)})."
        )
    return " ".join(sentences)
