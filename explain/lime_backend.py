"""LIME weights per raw schema feature, reproducible by seed.

LimeTabularExplainer works on raw features: categorical (and boolean) features
are categories, never numbers; the statistics used for sampling come from the
version's background sample. Every explanation re-seeds the explainer, so the
same decision and seed give the same answer.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lime
import numpy as np
import pandas as pd
from lime.discretize import QuartileDiscretizer
from lime.lime_tabular import LimeTabularExplainer

from explain.engine import Backend, ExplanationResult, ModelContext
from explain.frames import CategoryCodes
from explain.ranking import rank_features
from explain.schema import Feature, Schema

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
        self._drawing = threading.Lock()
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
        label = self.context.positive_index() if self.context.is_classifier else 0
        names = self.context.schema.names
        # The explainer's generator is reseeded, then drawn from: one row at a time (a web
        # process explains from threads with one cached explainer a version).
        with self._drawing:
            self._reseed(seed)
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


BACKEND = Backend("lime", LimeExplainer, explain_rows)


# --- LIME's rules, derived when shown ------------------------------------------------
#
# LimeTabularExplainer (discretize_continuous=True) reads each numeric feature as the
# quartile bin of the background that the value falls in ("income <= 30000.00"); a
# stored result keeps one weight per feature, not that rule (the result is sealed, and
# stays as it is). The rule is a function of the background and the value alone, so it
# is derived again when a result is shown, from the discretizer the explainer builds.


def lime_categorical_names(schema: Schema) -> dict[int, list[str]]:
    """The category names LimeExplainer gives LIME: categorical and boolean features."""
    return {
        i: [str(c) for c in f.categories] if f.type == "categorical" else ["false", "true"]
        for i, f in enumerate(schema.features)
        if f.type in ("categorical", "boolean")
    }


def quartile_discretizer(schema: Schema, background: pd.DataFrame) -> QuartileDiscretizer:
    """The discretizer LimeExplainer's LimeTabularExplainer builds: the same encoded
    background, categorical features and names (tests/explain/test_lime_rules.py)."""
    return QuartileDiscretizer(
        CategoryCodes(schema).encode(background),
        sorted(lime_categorical_names(schema)),
        schema.names,
        labels=None,
        random_state=0,
    )


@dataclass(frozen=True)
class LimeRule:
    """The condition LIME's weight for one feature stands for, on one decision's value.

    Numeric features: lower < value <= upper (None: unbounded on that side), the bounds
    being quartiles of the background. Categorical and boolean features: value == category.
    """

    feature: Feature
    lower: float | None = None
    upper: float | None = None
    category: Any = None

    @property
    def text(self) -> str:
        """ "Annual income (EUR) ≤ 30,000", "2 < Previous defaults ≤ 5", "Housing = rent":
        the feature's label, numbers in the schema's format (units, decimals, separators).

        A whole-number feature's bounds are whole numbers: x ≤ 39.5 and x > 39.5 hold for
        the same integers as x ≤ 39 and x > 39, so a quartile is shown rounded down.
        """
        feature = self.feature
        if feature.type in ("categorical", "boolean"):
            return f"{feature.label} = {feature.format_value(self.category)}"
        low, high = (self._bound(b) for b in (self.lower, self.upper))
        if self.lower is None:
            return f"{feature.label} \u2264 {high}"
        if self.upper is None:
            return f"{feature.label} > {low}"
        return f"{low} < {feature.label} \u2264 {high}"

    def _bound(self, bound: float | None) -> str:
        if bound is None:
            return ""
        if self.feature.type == "integer":
            return self.feature.format_value(math.floor(bound))
        return self.feature.format_value(bound)


class LimeRules:
    """The rules of one model version's LIME explanations (its schema and background)."""

    def __init__(self, schema: Schema, background: pd.DataFrame):
        self.schema = schema
        self.discretizer = quartile_discretizer(schema, background)

    def rule(self, name: str, value: Any) -> LimeRule | None:
        """The rule for a feature's value; None when it has none (a missing value)."""
        index = self.schema.names.index(name)
        feature = self.schema.features[index]
        if value is None:
            return None
        if feature.type in ("categorical", "boolean"):
            return LimeRule(feature, category=value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        number = float(value)
        mins, maxs = self.discretizer.mins[index], self.discretizer.maxs[index]
        if not math.isfinite(number) or not all(map(math.isfinite, [*mins, *maxs])):
            return None
        # LIME's own bin of the value (numpy's searchsorted over the quartiles); the
        # bin's bounds are the quartiles either side, the outer bins open-ended.
        bin_index = int(self.discretizer.lambdas[index](number))
        last = len(maxs) - 1
        return LimeRule(
            feature,
            lower=float(mins[bin_index]) if bin_index > 0 else None,
            upper=float(maxs[bin_index]) if bin_index < last else None,
        )

    def rules(self, inputs: Mapping[str, Any]) -> dict[str, LimeRule]:
        """Every feature's rule for a decision's inputs (features without one left out)."""
        found = {}
        for name in self.schema.names:
            rule = self.rule(name, inputs.get(name))
            if rule is not None:
                found[name] = rule
        return found
