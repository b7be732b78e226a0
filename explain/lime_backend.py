"""LIME weights per raw schema feature, reproducible by seed.

LimeTabularExplainer works on raw features: categorical (and boolean) features
are categories, never numbers; the statistics used for sampling come from the
version's background sample. Every explanation re-seeds the explainer, so the
same decision and seed give the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lime
import numpy as np
import pandas as pd
from lime.lime_tabular import LimeTabularExplainer

from explain.engine import ExplanationResult, ModelContext
from explain.features import CategoryCodes
from explain.ranking import rank_features

NUM_SAMPLES = 5000
LIME_VERSION = getattr(lime, "__version__", "0.2.0.1")


class LimeExplainer:
    """A LimeTabularExplainer for one model version; cached by the worker per artifact."""

    def __init__(self, context: ModelContext, options: dict[str, Any] | None = None):
        if context.background is None:
            raise ValueError("LIME needs the version's background sample (its statistics)")
        self.context = context
        self.background = context.background
        self.options = options or {}
        self.num_samples = int(self.options.get("num_samples", NUM_SAMPLES))
        schema = context.schema
        self.codes = CategoryCodes(schema)
        categorical = {
            i: [str(c) for c in f.categories] if f.type == "categorical" else ["false", "true"]
            for i, f in enumerate(schema.features)
            if f.type in ("categorical", "boolean")
        }
        self.mode = "classification" if context.is_classifier else "regression"
        self.explainer = LimeTabularExplainer(
            self.codes.encode(context.background),
            mode=self.mode,
            feature_names=schema.names,
            categorical_features=sorted(categorical),
            categorical_names=categorical,
            class_names=[str(c) for c in context.model.classes_] if context.is_classifier else None,
            discretize_continuous=True,
            random_state=0,
        )

    def _predict(self, array: np.ndarray) -> np.ndarray:
        frame = self.codes.decode(array)
        if self.context.is_classifier:
            return np.asarray(self.context.model.predict_proba(frame), dtype=float)
        return np.asarray(self.context.model.predict(frame), dtype=float)

    def _reseed(self, seed: int) -> None:
        state = np.random.RandomState(seed)
        self.explainer.random_state = state
        self.explainer.base.random_state = state
        if self.explainer.discretizer is not None:
            self.explainer.discretizer.random_state = state

    def explain_one(self, row: np.ndarray, seed: int) -> ExplanationResult:
        self._reseed(seed)
        label = self.context.positive_index() if self.context.is_classifier else 0
        names = self.context.schema.names
        explanation = self.explainer.explain_instance(
            row,
            self._predict,
            labels=(label,),
            num_features=len(names),
            num_samples=self.num_samples,
        )
        weights = dict(explanation.local_exp[label if self.mode == "classification" else 0])
        attributions = {name: float(weights.get(i, 0.0)) for i, name in enumerate(names)}
        intercept = explanation.intercept[label if self.mode == "classification" else 0]
        local_prediction = explanation.local_pred
        return ExplanationResult(
            method="lime",
            explainer="LimeTabularExplainer",
            library_version=f"lime {LIME_VERSION}",
            output_space="probability" if self.context.is_classifier else "raw",
            base_value=float(intercept),
            attributions=attributions,
            top_features=rank_features(attributions),
            quality={
                "fidelity_r2": float(explanation.score),
                "local_prediction": float(np.asarray(local_prediction).reshape(-1)[0])
                if local_prediction is not None
                else None,
            },
            config={
                "num_samples": self.num_samples,
                "discretize_continuous": True,
                "discretizer": "quartile",
                "background_rows": len(self.background),
                "background_sha256": self.context.background_sha256,
                "artifact_sha256": self.context.artifact_sha256,
            },
            seed=seed,
        )


def explain_rows(
    context: ModelContext, frame: pd.DataFrame, seeds: Sequence[int], options: dict[str, Any]
) -> list[ExplanationResult]:
    explainer = options.get("explainer") or LimeExplainer(context, options)
    encoded = explainer.codes.encode(frame)
    return [explainer.explain_one(row, seed) for row, seed in zip(encoded, seeds, strict=True)]
