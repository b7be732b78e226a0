"""Monitoring metrics of one model version over one window, against its reference.

`compute_window_metrics(model_version, start, end)` is the contract: it returns a
JSON-serialisable dict in the shape of API.md's monitoring snapshot; the compliance
report gets the same dict for each of many windows from `compute_windows_metrics`.
The figures come from scipy (KS, chi-squared), scikit-learn (performance,
calibration, NDCG) and fairlearn (selection rates, demographic parity, equalised
odds); PSI, which none of them provides, is the symmetrised relative entropy of
binned shares (scipy's `rel_entr`).

The window's data is fetched in one query (inputs, score, prediction, latest
outcome, SHAP attributions, in time order) plus one aggregate over explanation
statuses, and everything after that is numpy / pandas. A report's period is
fetched once and cut into windows (`Period.between`); fairlearn's frames are built
once for all its windows, the window as a control feature (`fairness_by_window`).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import warnings
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
from django.db.models import (
    Count,
    FilteredRelation,
    Func,
    Q,
    TextField,
)
from django.db.models.functions import Cast, Trunc
from fairlearn.metrics import (
    MetricFrame,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy import special, stats
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from auditapp.decisions import explanation_hooks
from auditapp.decisions.models import Decision, Outcome, served_q
from auditapp.encryption import merged, row_binding
from auditapp.monitoring import thresholds
from auditapp.monitoring.documents import group_order
from auditapp.monitoring.models import MonitoringSettings
from auditapp.monitoring.windows import window_floor
from auditapp.replicas import on_primary
from auditapp.snapshots import write_now
from explain.packing import unpack
from explain.schema import Feature, Schema

log = logging.getLogger(__name__)

PSI_BINS = 10  # bins of the reference: deciles, a value holding more than a tenth on its own
PSI_SMOOTHING = 0.5  # pseudo-count per bin, so an empty bin does not make PSI infinite
SCORE_BINS = 10  # histogram and calibration bins over [0, 1]
REFERENCE_SHAP_ROWS = 200  # background rows explained once for the reference attributions
EXPLAINED = "done"  # the status of an explanation with a stored result (explain.models)
MISSING = "missing"
EN_DASH = "\u2013"
NULL = "null"


# --- data ----------------------------------------------------------------------------------


@dataclass
class Observations:
    """Decisions (of a window, or of a reference) as columns."""

    frame: pd.DataFrame  # one column per schema feature, raw values
    scores: np.ndarray  # float, NaN where there is no score
    predictions: np.ndarray  # object
    outcomes: np.ndarray  # object, None where no outcome is known
    attributions: list[dict | None]  # SHAP per decision, None where not (yet) explained
    explanations: dict[str, int]  # explanation rows by status
    # True where the decision's inputs were erased (retention, a person's request): they
    # are unknown, not missing, and count in no input figure (input_drift)
    erased: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def known(self) -> np.ndarray:
        """True where the decision's inputs are known (not erased)."""
        if self.erased is None:
            return np.ones(len(self.frame), dtype=bool)
        return ~self.erased

    @property
    def known_inputs(self) -> pd.DataFrame:
        """The frame without the erased decisions' rows."""
        if self.erased is None or not self.erased.any():
            return self.frame
        return self.frame[self.known]


@dataclass
class Reference:
    kind: str  # "background" | "period" | "none"
    observations: Observations | None
    mean_abs_shap: dict[str, float] | None
    roc_auc: float | None  # the version's training metric, or the reference period's
    description: str


def observations(
    schema: Schema,
    inputs: list[dict],
    scores: list,
    predictions: list,
    outcomes: list | None = None,
    attributions: list | None = None,
    explanations: dict[str, int] | None = None,
    erased: list[bool] | None = None,
) -> Observations:
    n = len(inputs)
    frame = pd.DataFrame.from_records(inputs, columns=schema.names) if n else _empty(schema)
    return Observations(
        frame=frame,
        scores=np.array([np.nan if s is None else s for s in scores], dtype=float),
        predictions=np.array(predictions, dtype=object),
        outcomes=np.array(outcomes if outcomes is not None else [None] * n, dtype=object),
        attributions=attributions if attributions is not None else [None] * n,
        explanations=explanations or {},
        erased=np.array(erased, dtype=bool) if erased is not None else None,
    )


def _empty(schema: Schema) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=object) for name in schema.names})


@dataclass
class Period:
    """A period's decisions as fetched, in (predicted_at, id) order, so that each window of
    it is a slice: a report of many windows reads its rows once, and each window's figures
    are those of the same rows, in the same order, as fetching the window alone gives."""

    schema: Schema
    start: datetime
    end: datetime
    kind: str | None  # day / week: the windows whose explanation counts were kept
    moments: list[datetime]
    inputs: list[dict]
    scores: list
    predictions: list
    outcomes: list
    attributions: list[dict | None]
    statuses: dict[datetime | None, dict[str, int]]  # by window start (None: the period)
    erased: list[bool]  # the decisions whose inputs were erased

    def between(self, low: datetime, high: datetime) -> Observations:
        """The decisions predicted in [low, high): the period, or one of its windows."""
        if (low, high) == (self.start, self.end):
            statuses = self.statuses.get(None) or _summed(self.statuses.values())
        elif self.kind is not None and window_floor(self.kind, low) == window_floor(
            self.kind, high - timedelta(microseconds=1)
        ):
            statuses = self.statuses.get(window_floor(self.kind, low), {})
        else:
            raise ValueError(f"[{low}, {high}) is neither the period nor one {self.kind} of it")
        first, last = bisect_left(self.moments, low), bisect_left(self.moments, high)
        rows = slice(first, last)
        return observations(
            self.schema,
            self.inputs[rows],
            self.scores[rows],
            self.predictions[rows],
            self.outcomes[rows],
            self.attributions[rows],
            statuses,
            self.erased[rows],
        )


def _summed(counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for by_status in counts:
        for status, n in by_status.items():
            total[status] = total.get(status, 0) + n
    return total


class UtcText(Func):
    """A timestamp as UTC ISO text (2026-11-20T10:00:00.000000+00:00), read back with
    datetime.fromisoformat: a million moments decode in a fraction of a second, against
    seconds through the driver's and Django's time zone converters. The same instant."""

    output_field = TextField()

    def as_sql(self, compiler, connection, **extra):  # type: ignore[override]
        sql, params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "postgresql":
            pattern = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'
            return f"to_char(({sql}) AT TIME ZONE 'UTC', '{pattern}')", params
        # SQLite holds naive UTC as 'YYYY-MM-DD HH:MM:SS[.ffffff]'.
        return f"(replace(substr({sql} || '.000000', 1, 26), ' ', 'T') || '+00:00')", params


def fetch_period(model_version, start: datetime, end: datetime, kind: str | None = None) -> Period:
    """The version's decisions predicted in [start, end): one query, their latest outcomes
    in another (a correlated subquery a row ran once per decision, serially), plus
    explanation counts (per `kind` window when given)."""
    chosen = {
        "model_version": model_version,
        "predicted_at__gte": start,
        "predicted_at__lt": end,
    }
    rows = list(
        Decision.objects.served()  # not shadow decisions (serving/): nobody was told them
        .filter(**chosen)
        .annotate(
            shap=FilteredRelation(
                "explanations",
                condition=Q(explanations__method="shap", explanations__status=EXPLAINED),
            ),
            # JSON as text, decoded below by orjson: several times faster than json.loads.
            inputs_text=Cast("inputs", TextField()),
            moment_text=UtcText("predicted_at"),
            prediction_text=Cast("prediction", TextField()),
        )
        .order_by("predicted_at", "id")
        .values_list(
            "moment_text",
            "inputs_text",
            "score",
            "prediction_text",
            "id",
            "shap__result__attributions",
            "sealed_inputs",
            "registered_model_id",
            "request_id",
            "kept_commitments",
        )
    )
    # The latest outcome of each decision: the last in (observed_at, id) order.
    latest = dict(
        Outcome.objects.filter(**{f"decision__{k}": v for k, v in chosen.items()})
        .filter(served_q(prefix="decision__"))
        .annotate(outcome_text=Cast("outcome", TextField()))
        .order_by("decision_id", "observed_at", "id")
        .values_list("decision_id", "outcome_text")
        .iterator(chunk_size=OUTCOME_CHUNK)
    )
    explained = (
        Decision.objects.served()
        .filter(
            model_version=model_version,
            predicted_at__gte=start,
            predicted_at__lt=end,
            explanations__isnull=False,
        )
        .order_by()
    )
    group = ["explanations__status"]
    if kind:
        explained = explained.annotate(window=Trunc("predicted_at", kind, tzinfo=UTC))
        group.insert(0, "window")
    statuses: dict[datetime | None, dict[str, int]] = {}
    counted = explained.values(*group).annotate(n=Count("explanations")).values_list(*group, "n")
    for *window, status, n in counted:
        key = window_floor(kind, window[0]) if kind else None
        statuses.setdefault(key, {})[status] = n
    columns = list(zip(*rows, strict=True)) if rows else [[]] * 10
    schema = model_version.parsed_schema
    names = schema.names  # a property: computed once, not once a row
    return Period(
        schema=schema,
        start=start,
        end=end,
        kind=kind,
        moments=[parse_time(text) for text in columns[0]],
        # fairness reads protected attributes, which may be sensitive: opened here
        inputs=[
            merged(values, sealed, row_binding(model_id, request_id))
            for values, sealed, model_id, request_id in zip(
                _decoded(columns[1]), columns[6], columns[7], columns[8], strict=True
            )
        ],
        scores=list(columns[2]),
        predictions=_decoded(columns[3]),
        outcomes=_decoded([latest.get(decision_id) for decision_id in columns[4]]),
        attributions=[None if packed is None else unpack(packed, names) for packed in columns[5]],
        statuses=statuses,
        erased=[kept is not None for kept in columns[9]],
    )


def fetch_window(model_version, start: datetime, end: datetime) -> Observations:
    """The version's decisions predicted in [start, end)."""
    return fetch_period(model_version, start, end).between(start, end)


parse_time = datetime.fromisoformat
OUTCOME_CHUNK = 20_000


def _decoded(texts) -> list:
    loads = orjson.loads
    return [None if text is None else loads(text) for text in texts]


# --- the reference -------------------------------------------------------------------------

_references: OrderedDict[tuple, Reference] = OrderedDict()
_references_lock = threading.Lock()
REFERENCE_CACHE_SIZE = 8


def load_reference(model_version) -> Reference:
    """The version's reference (background sample, or a period of its decisions), cached per
    process; the model's scores and SHAP on the background are computed once and stored."""

    config, _ = MonitoringSettings.objects.get_or_create(model_version=model_version)
    key = (
        model_version.pk,
        config.reference_kind,
        config.reference_start,
        config.reference_end,
        config.updated_at,
        model_version.background_sha256,
    )
    with _references_lock:
        if key in _references:
            _references.move_to_end(key)
            return _references[key]
    if config.reference_kind == MonitoringSettings.PERIOD:
        reference = _period_reference(model_version, config)
    else:
        reference = _background_reference(model_version, config)
    with _references_lock:
        _references[key] = reference
        while len(_references) > REFERENCE_CACHE_SIZE:
            _references.popitem(last=False)
    return reference


def training_auc(model_version) -> float | None:
    """The ROC AUC on the version's card (`roc_auc`, or `auc`), if it has one."""
    for name in ("roc_auc", "auc"):
        value = (model_version.metrics or {}).get(name)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None


def _period_reference(model_version, config) -> Reference:
    data = fetch_window(model_version, config.reference_start, config.reference_end)
    schema = model_version.parsed_schema
    auc = (performance(schema, data) or {}).get("roc_auc")
    return Reference(
        kind="period",
        observations=data,
        mean_abs_shap=mean_abs_shap(schema, data.attributions),
        roc_auc=auc if auc is not None else training_auc(model_version),
        description=(
            f"decisions from {config.reference_start.isoformat()} "
            f"to {config.reference_end.isoformat()}"
        ),
    )


def _background_reference(model_version, config) -> Reference:
    if not model_version.background:
        return Reference("none", None, None, training_auc(model_version), "no background sample")
    frame = explanation_hooks.background_frame(model_version)
    cache_key = f"{model_version.artifact_sha256}:{model_version.background_sha256}"
    cache = config.reference_cache if config.reference_cache_key == cache_key else {}
    if not cache:
        figures = explanation_hooks.background_figures(model_version, REFERENCE_SHAP_ROWS)
        cache = {
            "scores": figures["scores"],
            "predictions": figures["predictions"],
            "mean_abs_shap": mean_abs_shap(model_version.parsed_schema, figures["attributions"]),
            "shap_rows": len(figures["attributions"]),
        }
        write_now(  # also from inside a report's read-only snapshot
            lambda: (
                type(config)
                .objects.filter(pk=config.pk)
                .update(reference_cache=cache, reference_cache_key=cache_key)
            )
        )
    rows = frame.to_dict(orient="records")
    data = observations(model_version.parsed_schema, rows, cache["scores"], cache["predictions"])
    return Reference(
        kind="background",
        observations=data,
        mean_abs_shap=cache["mean_abs_shap"],
        roc_auc=training_auc(model_version),
        description=f"background sample ({len(frame)} rows)",
    )


# --- drift ---------------------------------------------------------------------------------


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index: sum((q - p) ln(q / p)) over bins, i.e. KL(q||p) + KL(p||q),
    with a pseudo-count per bin so that an empty bin does not make it infinite."""
    p = reference_counts + PSI_SMOOTHING
    q = current_counts + PSI_SMOOTHING
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(special.rel_entr(q, p) + special.rel_entr(p, q)))


def quantile_edges(reference: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges, from the reference alone (so every window is binned the same way).

    A value holding more than 1/`bins` of the reference (the zeros of a zero-inflated
    feature, the 40 of hours per week, a constant) gets a bin of its own, [v, nextafter(v)):
    plain deciles collapse onto such a mass and put it in one bin with everything above it,
    so a shift in its share would not move PSI at all. The bins left (`bins` less the masses)
    are the quantiles of the other values, so there are about `bins` bins whatever the
    shape; with no mass they are the reference's deciles. NaN and infinities place no edge.
    No sampling or randomness: the same reference always gives the same edges.
    """
    values = np.asarray(reference, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.array([])
    distinct, counts = np.unique(values, return_counts=True)
    masses = distinct[counts * bins > values.size]
    rest = values[~np.isin(values, masses)]
    edges = [masses, np.nextafter(masses, np.inf)]
    if rest.size:
        left = max(bins - masses.size, 1)
        edges.append(np.quantile(rest, np.linspace(0, 1, left + 1)[1:-1]))
    return np.unique(np.concatenate(edges))


def binned(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin: (-inf, e0), [e0, e1), ..., [e_last, inf); NaN is in none of them
    (numeric_drift counts it as missing)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def numeric_drift(reference: np.ndarray, current: np.ndarray) -> dict:
    """PSI over the reference's bins (`quantile_edges`), and the two-sample Kolmogorov-Smirnov
    test; drifted by `_drifted` (thresholds.PSI_SHIFT and thresholds.DRIFT_P_VALUE)."""
    ref, cur = reference[~np.isnan(reference)], current[~np.isnan(current)]
    entry: dict[str, Any] = {
        "type": "numeric",
        "psi": None,
        "ks_p": None,
        "ks_statistic": None,
        "drifted": False,
        "reference_mean": float(ref.mean()) if ref.size else None,
        "current_mean": float(cur.mean()) if cur.size else None,
        "missing": int(current.size - cur.size),
    }
    if ref.size == 0 or cur.size == 0:
        return entry
    edges = quantile_edges(ref)
    entry["psi"] = psi(binned(ref, edges), binned(cur, edges))
    test = stats.ks_2samp(ref, cur)
    entry["ks_p"], entry["ks_statistic"] = float(test.pvalue), float(test.statistic)
    entry["drifted"] = _drifted(entry["psi"], entry["ks_p"])
    return entry


def _drifted(psi_value: float, p_value: float) -> bool:
    """A shift large enough to matter (PSI) that is also unlikely to be chance (the test)."""
    return psi_value > thresholds.PSI_SHIFT and p_value < thresholds.DRIFT_P_VALUE


def category_labels(values: pd.Series | np.ndarray) -> np.ndarray:
    """Categories as text, so that True, "true" and None ("null") compare as one would expect."""
    series = pd.Series(np.asarray(values, dtype=object), dtype=object)
    labels = series.astype(str)
    booleans = series.isin([True, False]).to_numpy()  # 1 and 0 too: lower() keeps them
    labels[booleans] = labels[booleans].str.lower()
    labels[series.isna().to_numpy()] = NULL
    return labels.to_numpy(dtype=object)


def categorical_drift(reference: np.ndarray, current: np.ndarray) -> dict:
    """PSI over the categories, and the chi-squared test of the 2 x categories table."""
    entry: dict[str, Any] = {"type": "categorical", "psi": None, "chi2_p": None, "drifted": False}
    if reference.size == 0 or current.size == 0:
        return entry
    categories = sorted(set(reference.tolist()) | set(current.tolist()))
    ref_counts = pd.Series(reference).value_counts().reindex(categories, fill_value=0).to_numpy()
    cur_counts = pd.Series(current).value_counts().reindex(categories, fill_value=0).to_numpy()
    entry["psi"] = psi(ref_counts, cur_counts)
    table = np.vstack([ref_counts, cur_counts])
    if table.shape[1] < 2:
        entry["chi2_p"] = 1.0
    else:
        entry["chi2_p"] = float(stats.chi2_contingency(table).pvalue)
    entry["reference_rates"] = dict(
        zip(categories, (ref_counts / ref_counts.sum()).tolist(), strict=True)
    )
    entry["current_rates"] = dict(
        zip(categories, (cur_counts / cur_counts.sum()).tolist(), strict=True)
    )
    entry["drifted"] = _drifted(entry["psi"], entry["chi2_p"])
    return entry


def numbers(frame: pd.DataFrame, name: str) -> np.ndarray:
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def input_drift(schema: Schema, reference: Observations, current: Observations) -> dict:
    """Per feature, the drift of the decisions whose inputs are known (not erased)."""
    drift = {}
    ref, cur = reference.known_inputs, current.known_inputs
    for feature in schema.features:
        if feature.type in ("numeric", "integer"):
            drift[feature.name] = numeric_drift(
                numbers(ref, feature.name), numbers(cur, feature.name)
            )
        else:
            drift[feature.name] = categorical_drift(
                category_labels(ref[feature.name]), category_labels(cur[feature.name])
            )
    return drift


def score_summary(scores: np.ndarray, classification: bool) -> dict:
    present = scores[~np.isnan(scores)]
    summary: dict[str, Any] = {"n": int(present.size)}
    if present.size == 0:
        return summary
    q10, q50, q90 = np.quantile(present, [0.1, 0.5, 0.9]).tolist()
    summary.update(mean=float(present.mean()), p10=q10, median=q50, p90=q90)
    if classification:
        edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)
        counts, _ = np.histogram(present, bins=edges)
        summary["histogram"] = {"edges": edges.tolist(), "counts": counts.tolist()}
    return summary


def score_drift(schema: Schema, reference: Observations, current: Observations) -> dict:
    classification = schema.target.type == "classification"
    entry = numeric_drift(reference.scores, current.scores)
    entry.pop("type")
    entry["current"] = score_summary(current.scores, classification)
    entry["reference"] = score_summary(reference.scores, classification)
    return entry


def prediction_drift(schema: Schema, reference: Observations, current: Observations) -> dict:
    if schema.target.type != "classification":
        entry = numeric_drift(
            reference.predictions.astype(float), current.predictions.astype(float)
        )
    else:
        entry = categorical_drift(
            category_labels(reference.predictions), category_labels(current.predictions)
        )
    entry.pop("type")
    return entry


def mean_abs_shap(schema: Schema, attributions: list[dict | None]) -> dict[str, float] | None:
    """Global importance: mean |SHAP| per feature over the explained decisions."""
    explained = [a for a in attributions if a]
    if not explained:
        return None
    matrix = pd.DataFrame.from_records(explained, columns=schema.names).fillna(0.0).abs()
    return dict(zip(schema.names, matrix.mean(axis=0).tolist(), strict=True))


def attribution_drift(
    schema: Schema, reference: dict[str, float] | None, current: Observations
) -> dict:
    """Change of mean |SHAP| per feature, and how well the current importance ranking keeps
    the reference's (NDCG of the current order, graded by reference importance; 1 = same)."""
    now = mean_abs_shap(schema, current.attributions)
    explained = sum(1 for a in current.attributions if a)
    result: dict[str, Any] = {"explained": explained, "mean_abs_shap": {}, "ranking_ndcg": None}
    if now is None or reference is None:
        return result
    for name in schema.names:
        before, after = reference.get(name, 0.0), now[name]
        result["mean_abs_shap"][name] = {
            "reference": before,
            "current": after,
            "change": after - before,
            "relative_change": (after - before) / before if before else None,
        }
    if len(schema.names) > 1:
        truth = np.array([[reference.get(n, 0.0) for n in schema.names]])
        scores = np.array([[now[n] for n in schema.names]])
        result["ranking_ndcg"] = float(skm.ndcg_score(truth, scores))
    return result


# --- performance ---------------------------------------------------------------------------


def performance(schema: Schema, data: Observations, reference_auc: float | None = None):
    """Scikit-learn's figures on the decisions whose outcome is known; None when there are none."""
    known = np.array([o is not None for o in data.outcomes], dtype=bool)
    if not known.any():
        return None
    if schema.target.type != "classification":
        return _regression_performance(data, known)
    positive = schema.target.positive_class
    y_true = np.array([o == positive for o in data.outcomes[known]], dtype=int)
    y_pred = np.array([p == positive for p in data.predictions[known]], dtype=int)
    scores = data.scores[known]
    result: dict[str, Any] = {
        "outcomes": int(known.sum()),
        "positive_rate": float(y_true.mean()),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": None,
        "brier": None,
        "calibration": [],
        "reference_roc_auc": reference_auc,
        "roc_auc_drop": None,
    }
    if not np.isnan(scores).any():
        result["brier"] = float(skm.brier_score_loss(y_true, scores))
        result["calibration"] = calibration_bins(y_true, scores)
        if 0 < y_true.sum() < y_true.size:
            result["roc_auc"] = float(skm.roc_auc_score(y_true, scores))
    if result["roc_auc"] is not None and reference_auc is not None:
        result["roc_auc_drop"] = reference_auc - result["roc_auc"]
    return result


def calibration_bins(y_true: np.ndarray, scores: np.ndarray) -> list[dict]:
    """Observed positive rate against mean score per bin (scikit-learn's calibration_curve)."""
    observed, predicted = calibration_curve(y_true, scores, n_bins=SCORE_BINS)
    edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)
    # calibration_curve's own binning, to name each non-empty bin and count it.
    counts = np.bincount(np.searchsorted(edges[1:-1], scores), minlength=SCORE_BINS)
    filled = np.flatnonzero(counts)
    return [
        {
            "bin_start": float(edges[i]),
            "bin_end": float(edges[i + 1]),
            "n": int(counts[i]),
            "mean_score": float(p),
            "observed_rate": float(o),
        }
        for i, p, o in zip(filled, predicted, observed, strict=True)
    ]


def _regression_performance(data: Observations, known: np.ndarray) -> dict:
    y_true = np.array(data.outcomes[known], dtype=float)
    y_pred = np.array(data.predictions[known], dtype=float)
    return {
        "outcomes": int(known.sum()),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "rmse": float(skm.root_mean_squared_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)) if known.sum() > 1 else None,
    }


# --- fairness ------------------------------------------------------------------------------


def favourable_class(schema: Schema, configured: Any = None) -> Any:
    """The class whose rate is the "selection rate": the version's monitoring settings',
    else the schema's favourable class (target "favourable"; without it, for a binary
    target, the class other than the positive one, which explanations push towards)."""
    target = schema.target
    if configured is not None:
        return configured
    if target.favourable_class is not None:
        return target.favourable_class
    return target.positive_class


def group_edges(feature: Feature, schema: Schema, configured: dict, reference) -> list[float]:
    """Bin edges for a numeric protected feature: the monitoring settings', the schema
    feature's "groups", else the reference's quartiles."""
    declared = configured.get(feature.name)
    if declared is None:
        raw = next((f for f in schema.raw.get("features", []) if f.get("name") == feature.name), {})
        declared = raw.get("groups")
    if declared:
        return sorted(float(e) for e in declared)
    values = numbers(reference.frame, feature.name) if reference is not None else np.array([])
    values = values[~np.isnan(values)]
    return np.unique(np.quantile(values, [0.25, 0.5, 0.75])).tolist() if values.size else []


def numeric_groups(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """'< 25', '25-40' (with an en dash), ..., '≥ 60' for each value; 'missing' for NaN."""
    labels = [f"< {edges[0]:g}"] if edges else ["all"]
    labels += [f"{a:g}{EN_DASH}{b:g}" for a, b in itertools.pairwise(edges)]
    labels += [f"≥ {edges[-1]:g}"] if edges else []
    index = np.searchsorted(np.array(edges), values, side="right")
    groups = np.array(labels, dtype=object)[np.minimum(index, len(labels) - 1)]
    groups[np.isnan(values)] = MISSING
    return groups


def protected_groups(feature: Feature, schema: Schema, data: Observations, configured, reference):
    if feature.type in ("numeric", "integer"):
        edges = group_edges(feature, schema, configured, reference)
        return numeric_groups(numbers(data.frame, feature.name), edges), edges
    labels = category_labels(data.frame[feature.name])
    labels[labels == NULL] = MISSING
    return labels, None


def fairness(
    schema: Schema,
    data: Observations,
    reference: Observations | None,
    *,
    favourable: Any = None,
    configured_groups: dict | None = None,
) -> dict:
    """Per protected feature: fairlearn's selection rate per group, demographic parity
    difference and ratio (the disparate impact ratio; four-fifths rule), and the
    equalised-odds difference on the decisions with an outcome."""
    (result,) = fairness_by_window(
        schema, [data], reference, favourable=favourable, configured_groups=configured_groups
    )
    if isinstance(result, Exception):
        raise result
    return result


def fairness_by_window(
    schema: Schema,
    windows: list[Observations],
    reference: Observations | None,
    *,
    favourable: Any = None,
    configured_groups: dict | None = None,
) -> list[dict | Exception]:
    """`fairness` of each window, fairlearn's frames built once for all of them (the window
    a control feature): its fixed cost, some 0.3 s a window for two protected features, is
    paid once. A window fairlearn refuses gets the exception, the others their figures."""
    if schema.target.type != "classification":
        return [{} for _ in windows]
    selected_class = favourable_class(schema, favourable)
    # An erased decision's group is unknown: it counts in no group (it had been "missing").
    known_rows = [data.known for data in windows]
    busy = [i for i, data in enumerate(windows) if known_rows[i].any()]
    results: list[dict | Exception] = [{} for _ in windows]
    if not busy:
        return results
    kept_rows = np.concatenate([known_rows[i] for i in busy])
    window = np.concatenate([np.full(len(windows[i]), i) for i in busy])[kept_rows]
    predictions = np.concatenate([windows[i].predictions for i in busy])[kept_rows]
    outcomes = np.concatenate([windows[i].outcomes for i in busy])[kept_rows]
    selected = np.array([p == selected_class for p in predictions], dtype=int)
    known = np.array([o is not None for o in outcomes], dtype=bool)
    truth = np.array([o == selected_class for o in outcomes], dtype=int)
    for feature in (f for f in schema.features if f.protected):
        parts = [
            protected_groups(feature, schema, windows[i], configured_groups or {}, reference)
            for i in busy
        ]
        groups = np.concatenate([labels for labels, _ in parts])[kept_rows]
        entries = _fairness_by_window(selected, truth, known, groups, window)
        for i in busy:
            entry, figures = entries[i], results[i]
            if isinstance(figures, Exception):
                continue
            if isinstance(entry, Exception):
                results[i] = entry
                continue
            entry["selected_class"] = selected_class
            if parts[0][1] is not None:
                entry["group_edges"] = parts[0][1]
            figures[feature.name] = entry
    return results


def _fairness_by_window(selected, truth, known, groups, window) -> dict[int, dict | Exception]:
    """{window: its figures}, from one frame over all windows; when fairlearn refuses that,
    each window alone, so that one it refuses does not take the others' figures with it."""
    try:
        return _fairness_entries(selected, truth, known, groups, window)
    except Exception:
        entries: dict[int, dict | Exception] = {}
        for label in np.unique(window).tolist():
            rows = window == label
            try:
                entries.update(
                    _fairness_entries(
                        selected[rows], truth[rows], known[rows], groups[rows], window[rows]
                    )
                )
            except Exception as exc:
                entries[label] = exc
        return entries


def _in_group_order(by_group: dict[str, Any]) -> dict[str, Any]:
    return {group: by_group[group] for group in sorted(by_group, key=group_order)}


def _fairness_entry(selected, truth, known, groups) -> dict:
    """The figures of one window (`_fairness_entries`)."""
    return _fairness_entries(selected, truth, known, groups, np.zeros(len(groups), dtype=int))[0]


def _fairness_entries(selected, truth, known, groups, window) -> dict[int, dict]:
    """fairlearn's figures per window, fed one row per distinct (window, group, labels) with
    its count as the sample weight (the same numbers as on every decision, without
    fairlearn's per-row cost), the window as a control feature: MetricFrame computes each
    window's groups apart, and its difference and ratio are per window, as
    demographic_parity_difference and _ratio and equalized_odds_difference give on one."""
    rows, weight = _distinct(window=window, group=groups, selected=selected)
    counts = pd.DataFrame({"window": window, "group": groups}).value_counts()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        frame = MetricFrame(
            metrics=selection_rate,
            y_true=rows["selected"],
            y_pred=rows["selected"],
            sensitive_features=rows["group"],
            control_features=rows["window"],
            sample_params={"sample_weight": weight},
        )
        rates, differences, ratios = frame.by_group, frame.difference(), frame.ratio()
        entries: dict[int, dict] = {}
        for label in np.unique(window).tolist():
            present = counts.loc[label]
            ratio = ratios.loc[label]
            entries[label] = {
                "selection_rate": _in_group_order(
                    {str(g): rates.loc[(label, g)] for g in present.index}
                ),
                "counts": _in_group_order({str(g): int(n) for g, n in present.items()}),
                "demographic_parity_difference": differences.loc[label],
                "disparate_impact_ratio": ratio,
                "four_fifths_ok": bool(ratio >= thresholds.FOUR_FIFTHS)
                if math.isfinite(ratio)
                else None,
                "equalized_odds_difference": None,
            }
        judged = [
            label
            for label in entries
            if 0 < truth[known & (window == label)].sum() < (known & (window == label)).sum()
        ]
        if judged:
            kept = known & np.isin(window, judged)
            rows, weight = _distinct(
                window=window[kept], group=groups[kept], truth=truth[kept], selected=selected[kept]
            )
            odds = MetricFrame(
                metrics={"tpr": true_positive_rate, "fpr": false_positive_rate},
                y_true=rows["truth"],
                y_pred=rows["selected"],
                sensitive_features=rows["group"],
                control_features=rows["window"],
                sample_params={"tpr": {"sample_weight": weight}, "fpr": {"sample_weight": weight}},
            ).difference()
            for label in judged:
                # equalized_odds_difference's worst case: the larger of the two differences.
                entries[label]["equalized_odds_difference"] = max(odds.loc[label])
    return entries


def _distinct(**columns: np.ndarray) -> tuple[dict[str, pd.Series], np.ndarray]:
    """The distinct rows of these columns and how often each occurs.

    As Series: fairlearn reads a one-row NumPy array of groups as a 2-D feature array
    and refuses it (a window where everyone is in one group and decided alike)."""
    counts = pd.DataFrame(columns).groupby(list(columns), sort=True).size()
    index = counts.index.to_frame(index=False)
    return {name: index[name] for name in columns}, counts.to_numpy(dtype=float)


# --- all together ------------------------------------------------------------------------


def window_metrics(
    schema: Schema,
    reference: Reference,
    data: Observations,
    *,
    favourable: Any = None,
    configured_groups: dict | None = None,
) -> dict:
    """Every figure of one window against the reference, as plain JSON values."""
    (result,) = windows_metrics(
        schema, reference, [data], favourable=favourable, configured_groups=configured_groups
    )
    if isinstance(result, Exception):
        raise result
    return result


def windows_metrics(
    schema: Schema,
    reference: Reference,
    windows: list[Observations],
    *,
    favourable: Any = None,
    configured_groups: dict | None = None,
) -> list[dict | Exception]:
    """`window_metrics` of each window, fairness computed for all at once (fairness_by_window);
    a window whose figures cannot be computed gets the exception, the others their figures."""
    ref = reference.observations
    fair = fairness_by_window(
        schema, windows, ref, favourable=favourable, configured_groups=configured_groups
    )
    results: list[dict | Exception] = []
    for data, fairness_figures in zip(windows, fair, strict=True):
        if isinstance(fairness_figures, Exception):
            results.append(fairness_figures)
            continue
        try:
            results.append(_figures(schema, reference, data, fairness_figures))
        except Exception as exc:
            results.append(exc)
    return results


def _figures(schema: Schema, reference: Reference, data: Observations, fairness_figures) -> dict:
    ref = reference.observations
    finished = data.explanations.get("done", 0) + data.explanations.get("failed", 0)
    result = {
        "decisions": len(data),
        "reference": {
            "kind": reference.kind,
            "description": reference.description,
            "rows": len(ref) if ref is not None else 0,
        },
        "drift": input_drift(schema, ref, data) if ref is not None else {},
        "score_drift": score_drift(schema, ref, data) if ref is not None else {},
        "prediction_drift": prediction_drift(schema, ref, data) if ref is not None else {},
        "attribution_drift": attribution_drift(schema, reference.mean_abs_shap, data),
        "performance": performance(schema, data, reference.roc_auc),
        "fairness": fairness_figures,
        "explanations": {
            **{
                status: data.explanations.get(status, 0)
                for status in ("pending", "running", "done", "failed")
            },
            "failure_rate": data.explanations.get("failed", 0) / finished if finished else None,
        },
    }
    return jsonable(result)


def compute_window_metrics(model_version, start: datetime, end: datetime) -> dict:
    """The monitoring snapshot of one version for decisions predicted in [start, end).

    The contract of API.md's snapshot (without the window bounds, which the caller knows):
    decisions, drift, score_drift, attribution_drift, performance (None without outcomes)
    and fairness, plus prediction_drift, explanations and reference.
    """
    period = fetch_period(model_version, start, end)
    (result,) = compute_windows_metrics(model_version, period, [(start, end)])
    if isinstance(result, Exception):
        raise result
    return result


def compute_windows_metrics(
    model_version, period: Period, bounds: list[tuple[datetime, datetime]]
) -> list[dict | Exception]:
    """`compute_window_metrics` of each [low, high) of `bounds` (the period itself, or its
    windows of `period.kind`), from the period's rows fetched once: the compliance report."""
    reference = load_reference(model_version)
    with on_primary():  # settings may have been made a moment ago (ensure_monitoring)
        config = MonitoringSettings.objects.get(model_version=model_version)
    return windows_metrics(
        model_version.parsed_schema,
        reference,
        [period.between(low, high) for low, high in bounds],
        favourable=config.favourable_class,
        configured_groups=config.fairness_groups,
    )


def jsonable(value: Any) -> Any:
    """Plain Python values; NaN and infinities become None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
