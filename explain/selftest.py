"""The registration self-test: do this version's SHAP explanations add up to the model itself?

A seeded sample of the background (or the schema's probe rows) is explained with
the explainer Attest chose, and each row's base value + Σ attributions is
compared with the pipeline's own output on the raw inputs. A version whose
explanations cannot be made to add up is refused at registration (unless its
owner explicitly accepts approximate explanations), so an explanation that
contradicts the model is never certified later. No Django here.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from explain.backends import backend
from explain.engine import ModelContext, describe, explain

SAMPLE_ROWS = 50  # exact explainers: milliseconds
AGNOSTIC_SAMPLE_ROWS = 5  # permutation SHAP: tens of milliseconds a row
SAMPLE_SEED = 0
# A version whose exact explainer failed the self-test, registered with
# explain.allow_approximate: the model-agnostic explainer (additive by construction).
APPROXIMATE_OPTIONS = {"model_agnostic": True}


def shap_options(self_test: dict) -> dict:
    """How a version's SHAP explainer is built, by its registration self-test record."""
    return APPROXIMATE_OPTIONS if self_test.get("shap", {}).get("passed") is False else {}


def sample_rows(rows: list[dict], size: int, seed: int = SAMPLE_SEED) -> list[dict]:
    """The same rows for the same background, on every machine."""
    if len(rows) <= size:
        return list(rows)
    chosen = np.sort(np.random.default_rng(seed).choice(len(rows), size, replace=False))
    return [rows[i] for i in chosen]


def run_self_test(context: ModelContext, rows: list[dict], options: dict | None = None) -> dict:
    """Figures of the self-test; `passed` is False with a `cause` when it did not add up."""
    started = time.perf_counter()
    shap = backend("shap")
    try:
        explainer: Any = shap.explainer(context, options or {})
    except Exception as exc:
        return _figures(started, passed=False, cause=f"no SHAP explainer fits: {describe(exc)}")
    size = AGNOSTIC_SAMPLE_ROWS if explainer.kind == "agnostic" else SAMPLE_ROWS
    sample = sample_rows(rows, size)
    seeds = [SAMPLE_SEED + i for i in range(len(sample))]
    results = explain(context, shap, sample, seeds, {"explainer": explainer})
    failed = [r for r in results if not r.ok or not r.quality.get("additivity_ok")]
    errors = [r.quality["additivity_error"] for r in results if r.ok]
    outputs = [abs(r.quality["model_output"]) for r in results if r.ok]
    relative = [e / max(1.0, o) for e, o in zip(errors, outputs, strict=True)]
    tolerance = next((r.quality["additivity_tolerance"] for r in results if r.ok), None)
    figures = {
        "explainer": type(explainer.explainer).__name__,
        "estimator": type(explainer.estimator).__name__,
        "output_space": explainer.output_space,
        "library_version": next((r.library_version for r in results if r.ok), None),
        "rows": len(sample),
        "seed": SAMPLE_SEED,
        "max_additivity_error": max(errors, default=None),
        "max_relative_error": max(relative, default=None),
        "tolerance": tolerance,
        "failed_rows": len(failed),
    }
    if explainer.fallback:
        figures["why_model_agnostic"] = explainer.fallback
    return _figures(started, passed=not failed, cause=_cause(explainer, failed, results), **figures)


def _cause(explainer: Any, failed: list, results: list) -> str:
    if not failed:
        return ""
    errors = [r.error for r in failed if not r.ok]
    if errors:
        return f"{len(errors)} of {len(results)} sample rows could not be explained: {errors[0]}"
    worst = max(r.quality["additivity_error"] for r in failed)
    return (
        f"{type(explainer.explainer).__name__} on {type(explainer.estimator).__name__}: base value "
        f"+ SHAP values differ from the pipeline's own {explainer.output_space} output on "
        f"{len(failed)} of {len(results)} sample rows (largest difference {worst:.3g}, "
        f"tolerance {failed[0].quality['additivity_tolerance']:g} relative)"
    )


def _figures(started: float, *, passed: bool, cause: str, **figures) -> dict:
    return {
        "passed": passed,
        "cause": cause,
        **figures,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
