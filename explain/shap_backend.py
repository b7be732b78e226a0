"""SHAP attributions per raw schema feature, with the explainer chosen by the final estimator.

- Tree ensembles (scikit-learn, XGBoost, LightGBM): TreeExplainer, exact, on the
  transformed rows (tree_path_dependent: no background needed).
- Linear models: LinearExplainer on the transformed rows, background as masker.
- Anything else: PermutationExplainer on the whole pipeline over raw features
  (categoricals as codes), on the positive-class probability.

For pipelines, the attributions of the columns derived from one input feature
are summed back onto that feature (exact, since SHAP values are additive).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import shap

from explain.engine import ExplanationResult, ModelContext, additivity_rows, rank_rows
from explain.features import (
    CategoryCodes,
    aggregation_matrix,
    dense,
    source_features,
    split_pipeline,
)

EXACT_TOLERANCE = 1e-6  # relative, for TreeSHAP and LinearSHAP
# XGBoost computes its contributions and margins in single precision (float32,
# about 7 digits): sums of a few hundred trees drift by ~1e-5. Exact all the same,
# so the check allows for the arithmetic the library used, not for approximation.
SINGLE_PRECISION_TOLERANCE = 1e-4
APPROXIMATE_TOLERANCE = 1e-6  # permutation SHAP is additive by construction too
AGNOSTIC_BACKGROUND = 100
AGNOSTIC_MAX_EVALS = 500
TREE_MODULES = ("xgboost", "lightgbm", "catboost")
TREE_CLASSES = (
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
)


def explainer_kind(estimator: Any) -> str:
    """'tree', 'linear' or 'agnostic', by the final estimator's class."""
    cls = type(estimator)
    if cls.__name__ in TREE_CLASSES or cls.__module__.split(".")[0] in TREE_MODULES:
        return "tree"
    if cls.__module__.startswith("sklearn.linear_model") and hasattr(estimator, "coef_"):
        return "linear"
    return "agnostic"


class ShapExplainer:
    """A fitted SHAP explainer for one model version; cached by the worker per artifact."""

    def __init__(self, context: ModelContext, options: dict | None = None):
        self.context = context
        self.options = options or {}
        self.preprocessing, self.estimator = split_pipeline(context.model)
        self.kind = explainer_kind(self.estimator)
        self.names = context.schema.names
        if self.kind == "agnostic":
            self._init_agnostic()
        else:
            self._init_exact()

    # -- exact explainers on the transformed rows -------------------------------------------
    def _init_exact(self) -> None:
        if self.preprocessing is not None:
            sources = source_features(self.preprocessing, self.context.schema)
            self.matrix = aggregation_matrix(sources, self.names)
        else:
            self.matrix = np.eye(len(self.names))
        if self.kind == "tree":
            self.explainer = shap.TreeExplainer(
                self.estimator, feature_perturbation="tree_path_dependent"
            )
            self.config = {"feature_perturbation": "tree_path_dependent", "model_output": "raw"}
        else:
            if self.context.background is None:
                raise ValueError("LinearExplainer needs the version's background sample")
            masker = self._transform(self.context.background)
            self.explainer = shap.LinearExplainer(self.estimator, masker)
            self.config = {"background_rows": len(masker)}
        self.output_space = self._output_space()
        self.negate = self._positive_is_first_class()

    def _transform(self, frame: pd.DataFrame):
        if self.preprocessing is None:
            return frame  # the estimator was fitted on named columns: keep the names
        return dense(self.preprocessing.transform(frame))

    def _output_space(self) -> str:
        if not self.context.is_classifier:
            return "raw"
        if self.kind == "tree" and type(self.estimator).__name__.startswith(
            ("RandomForest", "ExtraTrees", "DecisionTree")
        ):
            return "probability"
        return "log_odds"

    def _positive_is_first_class(self) -> bool:
        """Binary margins are for classes_[1]; flip them when the positive class is classes_[0]."""
        return (
            self.context.is_classifier
            and self.output_space == "log_odds"
            and len(self.estimator.classes_) == 2
            and self.context.positive_index() == 0
        )

    def _margin(self, transformed: np.ndarray) -> np.ndarray:
        module = type(self.estimator).__module__.split(".")[0]
        if module == "xgboost":
            return self.estimator.predict(transformed, output_margin=True)
        if module == "lightgbm":
            return self.estimator.predict(transformed, raw_score=True)
        return self.estimator.decision_function(transformed)

    def _exact_outputs(self, transformed: np.ndarray) -> np.ndarray:
        """The model's output for each row in the explanation's output space."""
        if not self.context.is_classifier:
            return np.asarray(self.estimator.predict(transformed), dtype=float)
        if self.output_space == "probability":
            return self.estimator.predict_proba(transformed)[:, self.context.positive_index()]
        margin = np.asarray(self._margin(transformed), dtype=float)
        if margin.ndim == 2:  # multiclass: one margin per class
            return margin[:, self.context.positive_index()]
        return -margin if self.negate else margin

    def _explain_exact(self, frame: pd.DataFrame):
        transformed = self._transform(frame)
        if self.kind == "tree":
            # shap's own check raises for the whole batch; ours below is per row,
            # against the model's own output, and recorded (additivity_ok).
            values = self.explainer.shap_values(transformed, check_additivity=False)
        else:
            values = self.explainer.shap_values(transformed)
        base = np.asarray(self.explainer.expected_value, dtype=float).reshape(-1)
        single_precision = np.asarray(values).dtype == np.float32
        values = np.asarray(values, dtype=float)
        if values.ndim == 3:  # (rows, columns, outputs): one output per class
            column = self.context.positive_index() if values.shape[2] > 1 else 0
            values, base_value = values[:, :, column], base[column]
        else:
            base_value = base[-1] if base.size > 1 else base[0]
        if self.negate:
            values, base_value = -values, -base_value
        outputs = self._exact_outputs(transformed)
        return values @ self.matrix, float(base_value), outputs, single_precision

    # -- model-agnostic: permutation SHAP on raw features -------------------------------------
    def _init_agnostic(self) -> None:
        if self.context.background is None:
            raise ValueError("model-agnostic SHAP needs the version's background sample")
        self.codes = CategoryCodes(self.context.schema)
        background = self.codes.encode(self.context.background)
        size = int(self.options.get("background_size", AGNOSTIC_BACKGROUND))
        if len(background) > size:
            background = shap.utils.sample(background, size, random_state=0)
        self.background_array = background
        self.masker = shap.maskers.Independent(background, max_samples=len(background))
        self.max_evals = int(self.options.get("max_evals", AGNOSTIC_MAX_EVALS))
        self.explainer = shap.PermutationExplainer(self._predict_encoded, self.masker)
        self.output_space = "probability" if self.context.is_classifier else "raw"
        self.config = {
            "background_rows": len(background),
            "max_evals": self.max_evals,
            "masker": "Independent",
        }

    def _predict_encoded(self, array: np.ndarray) -> np.ndarray:
        frame = self.codes.decode(array)
        if self.context.is_classifier:
            return self.context.model.predict_proba(frame)[:, self.context.positive_index()]
        return np.asarray(self.context.model.predict(frame), dtype=float)

    def _explain_agnostic(self, frame: pd.DataFrame, seeds: Sequence[int]):
        encoded = self.codes.encode(frame)
        values, bases = [], []
        for row, seed in zip(encoded, seeds, strict=True):
            # shap's permutation sampling draws from NumPy's global generator.
            np.random.seed(seed)
            result = self.explainer(row.reshape(1, -1), max_evals=self.max_evals, silent=True)
            values.append(result.values[0])
            bases.append(float(np.asarray(result.base_values).reshape(-1)[0]))
        outputs = self._predict_encoded(encoded)
        return np.asarray(values), bases, outputs

    # -- one batch ----------------------------------------------------------------------------
    def explain(self, frame: pd.DataFrame, seeds: Sequence[int]) -> list[ExplanationResult]:
        if self.kind == "agnostic":
            values, bases, outputs = self._explain_agnostic(frame, seeds)
            tolerance = float(self.options.get("tolerance", APPROXIMATE_TOLERANCE))
            seed_list: list[int | None] = list(seeds)
        else:
            values, base, outputs, single_precision = self._explain_exact(frame)
            bases = [base] * len(frame)
            tolerance = SINGLE_PRECISION_TOLERANCE if single_precision else EXACT_TOLERANCE
            seed_list = [None] * len(frame)
        values = np.asarray(values, dtype=float).reshape(len(frame), len(self.names))
        # Whole-batch arithmetic, then one small dict per row: per-row Python work
        # would cost as much as TreeSHAP itself on a small ensemble.
        qualities = additivity_rows(np.asarray(bases, dtype=float), values, outputs, tolerance)
        tops = rank_rows(values, self.names)
        explainer = type(self.explainer).__name__
        version = f"shap {shap.__version__}"
        config = {  # one object shared by the batch's rows (they all used this configuration)
            **self.config,
            "background_sha256": self.context.background_sha256,
            "artifact_sha256": self.context.artifact_sha256,
        }
        return [
            ExplanationResult(
                method="shap",
                explainer=explainer,
                library_version=version,
                output_space=self.output_space,
                base_value=float(base_value),
                attributions=dict(zip(self.names, row_values, strict=True)),
                top_features=top,
                quality=quality,
                config=config,
                seed=seed,
            )
            for row_values, base_value, top, quality, seed in zip(
                values.tolist(), bases, tops, qualities, seed_list, strict=True
            )
        ]


def explain_rows(
    context: ModelContext, frame: pd.DataFrame, seeds: Sequence[int], options: dict
) -> list[ExplanationResult]:
    explainer = options.get("explainer") or ShapExplainer(context, options)
    return explainer.explain(frame, seeds)
