"""SHAP attributions per raw schema feature, with the explainer chosen by the final estimator.

- Tree ensembles (scikit-learn, XGBoost, LightGBM): TreeExplainer, exact, on the
  transformed rows (tree_path_dependent: no background needed).
- Linear models: LinearExplainer on the transformed rows, every background row in
  the masker.
- Anything else, or a preprocessing whose columns cannot be traced back to raw
  features: PermutationExplainer on the whole pipeline over raw features
  (categoricals as codes), on the positive-class probability.

Two rules keep the numbers true to what production decided:

- Each estimator gets its native input: whatever the preprocessing emits (a
  sparse matrix, a DataFrame with categorical columns) reaches XGBoost and
  LightGBM unchanged, because they read an absent sparse entry as *missing*,
  not as 0. Only scikit-learn estimators, which read it as 0 and which shap
  cannot take sparse, get a dense copy.
- Additivity is checked against the pipeline's own output on the raw inputs
  (`decision_function`, `predict_proba`, `predict(output_margin=True)`…: the call
  production makes), never against a recomputation along the explainer's path.

For pipelines, the attributions of the columns derived from one input feature
are summed back onto that feature (exact, since SHAP values are additive).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
import shap

from explain.engine import Backend, ExplanationResult, ModelContext, additivity_rows
from explain.features import (
    FeatureMappingError,
    PerFeatureTransform,
    aggregation_matrix,
    dense,
    source_features,
    split_pipeline,
)
from explain.frames import CategoryCodes
from explain.ranking import rank_rows

EXACT_TOLERANCE = 1e-6  # relative, for TreeSHAP and LinearSHAP
# XGBoost and LightGBM's native TreeSHAP compute in single precision (float32,
# about 7 digits): sums of a few hundred trees drift by ~1e-5. Exact all the same,
# so the check allows for the arithmetic the library used, not for approximation.
SINGLE_PRECISION_TOLERANCE = 1e-4
APPROXIMATE_TOLERANCE = 1e-6  # permutation SHAP is additive by construction too
AGNOSTIC_BACKGROUND = 100
AGNOSTIC_MAX_EVALS = 500
BACKGROUND_SAMPLE_SEED = 0  # the model-agnostic explainer's background summary
TREE_MODULES = ("xgboost", "lightgbm", "catboost")
# Libraries that read their input natively: sparse stays sparse (absent = missing),
# pandas categoricals stay categoricals (their own categorical splits).
NATIVE_INPUT_MODULES = ("xgboost", "lightgbm", "catboost")
# shap's permutation explainer draws from NumPy's global generator and masks rows in
# buffers of its masker: one model-agnostic explanation at a time in a process (a web
# process explains what-ifs from threads), or two at once give each other's numbers.
AGNOSTIC_DRAWING = threading.Lock()
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
PROBABILITY_TREES = ("RandomForest", "ExtraTrees", "DecisionTree")
LINEAR_SVM_CLASSES = ("LinearSVC", "LinearSVR")


def explainer_kind(estimator: Any) -> str:
    """'tree', 'linear' or 'agnostic', by the final estimator's class."""
    cls = type(estimator)
    if cls.__name__ in TREE_CLASSES or _library(estimator) in TREE_MODULES:
        return "tree"
    if hasattr(estimator, "coef_") and (
        cls.__module__.startswith("sklearn.linear_model") or cls.__name__ in LINEAR_SVM_CLASSES
    ):
        return "linear"
    return "agnostic"


def _library(estimator: Any) -> str:
    return type(estimator).__module__.split(".")[0]


def rows_sha256(frame: pd.DataFrame) -> str:
    """sha256 of rows as CSV (no index): names exactly which background rows were used."""
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def output_space(kind: str, estimator: Any, is_classifier: bool) -> str:
    """Where the attributions live: what base value + their sum equals."""
    if not is_classifier:
        return "raw"
    if not hasattr(estimator, "predict_proba"):
        return "decision_function"  # e.g. a linear SVM: its margin is not a log-odds
    if kind == "agnostic" or (
        kind == "tree" and type(estimator).__name__.startswith(PROBABILITY_TREES)
    ):
        return "probability"
    return "log_odds"


class ShapExplainer:
    """A fitted SHAP explainer for one model version; cached by the worker per artifact."""

    config: dict[str, Any]  # how the explainer was built, recorded with every result

    def __init__(self, context: ModelContext, options: dict[str, Any] | None = None):
        self.context = context
        self.options = options or {}
        self.preprocessing, self.estimator = split_pipeline(context.model)
        self.kind = explainer_kind(self.estimator)
        self.names = context.schema.names
        self.fallback = ""
        if self.kind != "agnostic" and self.options.get("model_agnostic"):
            # The version's exact explainer failed its registration self-test and
            # its owner accepted approximate explanations (explain.allow_approximate).
            self.kind, self.fallback = "agnostic", "the exact explainer failed the self-test"
        if self.kind != "agnostic":
            try:
                self.matrix = self._aggregation()
            except FeatureMappingError as exc:
                # Columns that mix raw features cannot be summed back onto one:
                # explain the whole pipeline over raw features instead (exact too).
                self.kind, self.fallback = "agnostic", str(exc)
        self.output_space = output_space(self.kind, self.estimator, context.is_classifier)
        self.negate = self._positive_is_first_class()
        if self.kind == "agnostic":
            self._init_agnostic()
        else:
            self._init_exact()

    # -- the model's own outputs: the reference every explanation must add up to -------------
    # A Pipeline's decision_function / predict_proba / predict is its preprocessing's
    # transform followed by the final estimator's method on that native output; doing
    # the two steps here lets one transform serve the explainer and both references.
    def model_outputs(self, frame: pd.DataFrame) -> np.ndarray:
        """The pipeline's own output on raw input rows, in this explanation's output space."""
        return self._outputs(self._transform(frame))

    def model_input(self, frame: pd.DataFrame) -> Any:
        """Raw input rows as the final estimator receives them (its predict, predict_proba)."""
        return self._transform(frame)

    def _outputs(self, transformed: Any) -> np.ndarray:
        estimator = self.estimator
        if self.output_space == "raw":
            return np.asarray(estimator.predict(transformed), dtype=float).reshape(-1)
        if self.output_space == "probability":
            return self._probabilities(transformed)
        library = _library(estimator)
        if library == "xgboost":
            margin = estimator.predict(transformed, output_margin=True)
        elif library == "lightgbm":
            margin = estimator.predict(transformed, raw_score=True)
        else:
            margin = estimator.decision_function(transformed)
        margin = np.asarray(margin, dtype=float)
        if margin.ndim == 2:  # multiclass: one margin per class
            return margin[:, self.context.positive_index()]
        return -margin if self.negate else margin

    def _scores(self, transformed: Any) -> np.ndarray | None:
        """The model's probability of the positive class (what a recorded score should be)."""
        if not self.context.is_classifier or not hasattr(self.estimator, "predict_proba"):
            return None
        return self._probabilities(transformed)

    def _probabilities(self, transformed: Any) -> np.ndarray:
        probabilities = self.estimator.predict_proba(transformed)
        return np.asarray(probabilities, dtype=float)[:, self.context.positive_index()]

    def _positive_is_first_class(self) -> bool:
        """Binary margins are for classes_[1]; flip them when the positive class is classes_[0]."""
        return (
            self.context.is_classifier
            and self.output_space in ("log_odds", "decision_function")
            and len(self.estimator.classes_) == 2
            and self.context.positive_index() == 0
        )

    # -- exact explainers on the transformed rows -------------------------------------------
    def _aggregation(self) -> np.ndarray:
        if self.preprocessing is None:
            return np.eye(len(self.names))
        sources = source_features(self.preprocessing, self.context.schema)
        return aggregation_matrix(sources, self.names)

    def _init_exact(self) -> None:
        if self.kind == "tree":
            self.explainer = shap.TreeExplainer(
                self.estimator, feature_perturbation="tree_path_dependent"
            )
            self.config = {"feature_perturbation": "tree_path_dependent", "model_output": "raw"}
            return
        background = self.context.background
        if background is None:
            raise ValueError("LinearExplainer needs the version's background sample")
        rows = dense(self._transform(background))
        # shap keeps 100 rows of a bare array; an explicit masker keeps every row we record.
        masker = shap.maskers.Independent(rows, max_samples=len(rows))
        self.explainer = shap.LinearExplainer(self.estimator, masker)
        self.config = {
            "feature_perturbation": "interventional",
            "masker": "Independent",
            "link": "identity",
            "background_rows": len(rows),
            "background_rows_sha256": rows_sha256(background),
        }

    def _transform(self, frame: pd.DataFrame) -> Any:
        """What the final estimator receives in production, as it receives it."""
        if self.preprocessing is None:
            return frame  # the estimator was fitted on named columns: keep the names
        return self.preprocessing.transform(frame)

    def _explainer_input(self, transformed: Any) -> Any:
        if _library(self.estimator) in NATIVE_INPUT_MODULES:
            return transformed
        if scipy.sparse.issparse(transformed):
            return transformed.toarray()  # scikit-learn reads an absent entry as 0 too
        return transformed

    def _explain_exact(self, transformed: Any) -> tuple[np.ndarray, float, bool]:
        transformed = self._explainer_input(transformed)
        if self.kind == "tree":
            # shap's own check raises for the whole batch; ours below is per row,
            # against the pipeline's own output, and recorded (additivity_ok).
            values = self.explainer.shap_values(transformed, check_additivity=False)
        else:
            values = self.explainer.shap_values(dense(transformed))
        values = _dense_values(values)
        base = np.asarray(self.explainer.expected_value, dtype=float).reshape(-1)
        single_precision = values.dtype == np.float32
        values = values.astype(float)
        if values.ndim == 3:  # (rows, columns, outputs): one output per class
            column = self.context.positive_index() if values.shape[2] > 1 else 0
            values, base_value = values[:, :, column], base[column]
        else:
            base_value = base[-1] if base.size > 1 else base[0]
        if self.negate:
            values, base_value = -values, -base_value
        return values @ self.matrix, float(base_value), single_precision

    # -- model-agnostic: permutation SHAP on raw features -------------------------------------
    def _init_agnostic(self) -> None:
        background = self.context.background
        if background is None:
            raise ValueError("model-agnostic SHAP needs the version's background sample")
        self.codes = CategoryCodes(self.context.schema)
        size = int(self.options.get("background_size", AGNOSTIC_BACKGROUND))
        of_rows = len(background)
        if of_rows > size:
            # A documented, seeded summary: the same rows on every worker and re-run.
            chosen = shap.utils.sample(
                np.arange(of_rows), size, random_state=BACKGROUND_SAMPLE_SEED
            )
            background = background.iloc[np.sort(chosen)].reset_index(drop=True)
        self.background_array = self.codes.encode(background)
        # The preprocessing taken apart feature by feature where that gives its output to
        # the bit (explain.features.PerFeatureTransform); else each evaluation runs it.
        self.assembly = PerFeatureTransform.build(
            self.preprocessing, self.context.schema, self._transform_codes, self.background_array
        )
        self.masker = shap.maskers.Independent(
            self.background_array, max_samples=len(self.background_array)
        )
        self.max_evals = int(self.options.get("max_evals", AGNOSTIC_MAX_EVALS))
        self.explainer = shap.PermutationExplainer(self._predict_encoded, self.masker)
        self.config = {
            "masker": "Independent",
            "link": "identity",
            "max_evals": self.max_evals,
            "background_rows": len(background),
            "background_rows_sha256": rows_sha256(background),
            "background_sample": {
                "of_rows": of_rows,
                "method": "shap.utils.sample",
                "random_state": BACKGROUND_SAMPLE_SEED,
            },
        }
        if self.fallback:
            self.config["why_model_agnostic"] = self.fallback

    def _transform_codes(self, array: np.ndarray) -> Any:
        return self._transform(self.codes.decode(array))

    def _predict_encoded(self, array: np.ndarray) -> np.ndarray:
        if self.assembly is not None:
            transformed = self.assembly(array)
            if transformed is not None:
                return self._outputs(transformed)
        return self.model_outputs(self.codes.decode(array))

    def _explain_agnostic(
        self, frame: pd.DataFrame, seeds: Sequence[int]
    ) -> tuple[np.ndarray, list[float]]:
        encoded = self.codes.encode(frame)
        values: list[np.ndarray] = []
        bases: list[float] = []
        for row, seed in zip(encoded, seeds, strict=True):
            with AGNOSTIC_DRAWING:
                # shap's permutation sampling draws from NumPy's global generator.
                np.random.seed(seed)
                if self.assembly is not None:
                    self.assembly.use_row(row)
                result = self.explainer(row.reshape(1, -1), max_evals=self.max_evals, silent=True)
            values.append(result.values[0])
            bases.append(float(np.asarray(result.base_values).reshape(-1)[0]))
        return np.asarray(values), bases

    # -- one batch ----------------------------------------------------------------------------
    def explain(
        self, frame: pd.DataFrame, seeds: Sequence[int], transformed: Any = None
    ) -> list[ExplanationResult]:
        """`transformed`: the rows already through the preprocessing (`model_input`), when
        the caller needs them too (a what-if's predictions): transformed once."""
        if transformed is None:
            transformed = self._transform(frame)  # once, for the explainer and the references
        if self.kind == "agnostic":
            values, bases = self._explain_agnostic(frame, seeds)
            tolerance = float(self.options.get("tolerance", APPROXIMATE_TOLERANCE))
            seed_list: list[int | None] = list(seeds)
        else:
            values, base, single_precision = self._explain_exact(transformed)
            bases = [base] * len(frame)
            tolerance = SINGLE_PRECISION_TOLERANCE if single_precision else EXACT_TOLERANCE
            seed_list = [None] * len(frame)
        values = np.asarray(values, dtype=float).reshape(len(frame), len(self.names))
        outputs = self._outputs(transformed)
        scores = outputs if self.output_space == "probability" else self._scores(transformed)
        # Whole-batch arithmetic, then one small dict per row: per-row Python work
        # would cost as much as TreeSHAP itself on a small ensemble.
        qualities = additivity_rows(np.asarray(bases, dtype=float), values, outputs, tolerance)
        if scores is not None:
            for quality, score in zip(qualities, scores.tolist(), strict=True):
                quality["model_score"] = score
        tops = rank_rows(values, self.names)
        explainer = type(self.explainer).__name__
        version = f"shap {shap.__version__}"
        config = {  # one object shared by the batch's rows (they all used this configuration)
            **self.config,
            "background_sha256": self.context.background_sha256,
            "artifact_sha256": self.context.artifact_sha256,
            "additivity_tolerance": tolerance,  # kept here once, not on every row's quality
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


def _dense_values(values: Any) -> np.ndarray:
    """shap's answer as one array: LightGBM answers sparse input with sparse values,
    and some versions answer a list with one array per class."""
    if isinstance(values, list):
        values = np.stack([_dense_values(v) for v in values], axis=-1)
    if scipy.sparse.issparse(values):
        values = values.toarray()
    return np.asarray(values)


def explain_rows(
    context: ModelContext, frame: pd.DataFrame, seeds: Sequence[int], options: dict[str, Any]
) -> list[ExplanationResult]:
    explainer = options.get("explainer") or ShapExplainer(context, options)
    return explainer.explain(frame, seeds)


BACKEND = Backend("shap", ShapExplainer, explain_rows)
