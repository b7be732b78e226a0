"""The explanation engine: explain a batch of rows with one method's backend.

Pure functions over plain objects; no auditapp, no Django, no Celery. Each method
lives in its own module (shap_backend, lime_backend), which imports the types
here; explain/backends.py names them (`backend("shap")`), and callers hand the
one they want to `explain`. Every method returns the same typed result, one per row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from explain.frames import input_frame
from explain.ranking import rank_features
from explain.schema import Schema

if TYPE_CHECKING:  # pandas loads when a frame is built (explain/schema.py says why)
    import pandas as pd

AGREEMENT_TOP_K = 3
# A recorded score may differ from the registered model's by rounding (three
# decimals pass); more means production did not run the artifact registered here.
SCORE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ModelContext:
    """Everything the engine needs to know about one model version."""

    model: Any
    schema: Schema
    background: pd.DataFrame | None
    background_sha256: str
    artifact_sha256: str

    @property
    def positive_class(self) -> str | int | None:
        return self.schema.target.positive_class

    @property
    def is_classifier(self) -> bool:
        return self.schema.target.type == "classification"

    def positive_index(self) -> int:
        """Column of the positive class in predict_proba (classes_ may be in any order)."""
        labels = [str(c) for c in self.model.classes_]
        return labels.index(str(self.positive_class))


@dataclass
class ExplanationResult:
    """One row's explanation, identical in shape for every method."""

    method: str
    explainer: str = ""
    library_version: str = ""
    output_space: str = ""
    base_value: float | None = None
    attributions: dict[str, float] = field(default_factory=dict)
    top_features: list[str] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def additivity_rows(
    base_values: np.ndarray, values: np.ndarray, outputs: np.ndarray, tolerance: float
) -> list[dict[str, Any]]:
    """additivity_quality for every row of a batch, the arithmetic done on whole arrays."""
    errors = np.abs(np.asarray(base_values) + np.sum(values, axis=1) - np.asarray(outputs))
    return [
        _additivity(error, output, tolerance)
        for error, output in zip(
            errors.tolist(), np.asarray(outputs, dtype=float).tolist(), strict=True
        )
    ]


def _additivity(error: float, model_output: float, tolerance: float) -> dict[str, Any]:
    return {
        "additivity_error": error,
        "additivity_tolerance": tolerance,
        "additivity_ok": bool(error <= tolerance * max(1.0, abs(model_output))),
        "model_output": model_output,
    }


def score_quality(model_score: float, recorded_score: float, tolerance: float) -> dict[str, Any]:
    """Does the score production recorded equal the registered model's own score?"""
    error = abs(model_score - recorded_score)
    return {
        "recorded_score": recorded_score,
        "score_error": error,
        "score_tolerance": tolerance,
        "score_ok": bool(error <= tolerance),
    }


def check_recorded_scores(
    results: list[ExplanationResult], scores: Sequence[float | None], tolerance: float
) -> None:
    """Add the recorded-score check to every result that knows the model's own score.

    The tolerance joins the result's configuration too (one object per configuration
    the batch shares), where a stored row finds it (records.stored_quality)."""
    configs: dict[int, dict[str, Any]] = {}
    for result, recorded in zip(results, scores, strict=True):
        model_score = result.quality.get("model_score")
        if not result.ok or model_score is None:
            continue
        key = id(result.config)
        if key not in configs:
            configs[key] = {**result.config, "score_tolerance": tolerance}
        result.config = configs[key]
        if recorded is not None:
            result.quality.update(score_quality(model_score, float(recorded), tolerance))


def agreement(shap_attr: dict[str, float], lime_attr: dict[str, float]) -> dict[str, float | None]:
    """How far SHAP and LIME tell the same story: top-k overlap and rank correlation.

    Like is compared with like: both methods' attributions are per raw schema
    feature, and only the ranks of their |attribution| are compared, never the
    values (SHAP's may be in log-odds, LIME's are in probability). The verdict
    on these figures, and whether LIME's fit makes them evidence at all, is the
    review rule's (auditapp.registry.agreement.judge_agreement).
    """
    names = sorted(shap_attr)
    k = min(AGREEMENT_TOP_K, len(names))
    overlap = len(set(rank_features(shap_attr, k)) & set(rank_features(lime_attr, k))) / k
    shap_values = [abs(shap_attr[n]) for n in names]
    lime_values = [abs(lime_attr.get(n, 0.0)) for n in names]
    if len(set(shap_values)) < 2 or len(set(lime_values)) < 2:
        correlation = float("nan")
    else:
        # Spearman's rho: Pearson's correlation of average ranks (scipy's spearmanr
        # gives the same, at a millisecond a call, which a batch of 250 feels).
        correlation = _pearson(_ranks(shap_values), _ranks(lime_values))
    return {
        "top_k": k,
        "top_k_overlap": overlap,
        "rank_correlation": correlation if math.isfinite(correlation) else None,
    }


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 0, ties sharing their average rank. Plain Python: vectors are short."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2
        start = end + 1
    return ranks


def _pearson(a: list[float], b: list[float]) -> float:
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True))
    var_a = sum((x - mean_a) ** 2 for x in a)
    var_b = sum((y - mean_b) ** 2 for y in b)
    return cov / math.sqrt(var_a * var_b)


ExplainFn = Callable[
    [ModelContext, "pd.DataFrame", Sequence[int], dict[str, Any]], list[ExplanationResult]
]


@dataclass(frozen=True)
class Backend:
    """One explanation method: its name, its explainer (built once per model version
    and cached by the worker) and the batch call that uses it."""

    method: str
    explainer: Callable[[ModelContext, dict[str, Any]], object]
    explain_rows: ExplainFn


def explain(
    context: ModelContext,
    backend: Backend,
    rows: list[dict[str, Any]],
    seeds: Sequence[int],
    options: dict[str, Any] | None = None,
    *,
    scores: Sequence[float | None] | None = None,
    score_tolerance: float = SCORE_TOLERANCE,
) -> list[ExplanationResult]:
    """Explain raw input rows (dicts of schema features) with one method, in one batch.

    `scores` are the scores production recorded with the rows, checked against
    the registered model's own (a mismatch: the artifact is not what decided).
    """
    results = _explain(context, backend, rows, seeds, options or {})
    if scores is not None:
        check_recorded_scores(results, scores, score_tolerance)
    return results


def _explain(
    context: ModelContext,
    backend: Backend,
    rows: list[dict[str, Any]],
    seeds: Sequence[int],
    options: dict[str, Any],
) -> list[ExplanationResult]:
    try:
        return backend.explain_rows(context, input_frame(context.schema, rows), seeds, options)
    except Exception:
        if len(rows) == 1:
            raise
    # Something in the batch broke the library call: explain row by row so
    # that one bad row fails alone, with its reason.
    results = []
    for row, seed in zip(rows, seeds, strict=True):
        try:
            results.extend(
                backend.explain_rows(context, input_frame(context.schema, [row]), [seed], options)
            )
        except Exception as exc:
            results.append(ExplanationResult(method=backend.method, seed=seed, error=describe(exc)))
    return results


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]
