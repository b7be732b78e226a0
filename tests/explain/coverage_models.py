"""The model families of the explanation coverage tests, trained on the committed real data.

One `Family` per kind of model the engine explains: which data set, which pipeline,
which explainer and output space the engine is expected to choose, and which
references the test compares it with. Every fit is small (well under a second).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from sklearn import ensemble
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.svm import LinearSVC
from xgboost import XGBClassifier

from explain.schema import Schema, parse_schema
from tests.datasets import (
    ADULT_CATEGORICAL,
    ADULT_NUMERIC,
    GERMAN_CATEGORICAL,
    GERMAN_NUMERIC,
    adult,
    german_credit,
    german_schema,
)

GERMAN_FEATURES = GERMAN_CATEGORICAL + GERMAN_NUMERIC
ADULT_REGRESSION_TARGET = "hours-per-week"

EXPLAINED_ROWS = 40
AGNOSTIC_ROWS = 8  # permutation SHAP evaluates the pipeline ~500 x background times per row
AGNOSTIC_BACKGROUND_ROWS = 50  # under the engine's summary size: the whole sample is the summary
LINEAR_BACKGROUND_ROWS = 260  # well over shap's 100-row Independent masker default


@dataclass(frozen=True)
class Data:
    """One learning problem: raw frames, labels, schema, and what to explain."""

    schema: Schema
    features: list[str]
    categorical: list[str]
    numeric: list[str]
    train: pd.DataFrame
    labels: pd.Series
    background: pd.DataFrame  # raw rows, schema columns only
    rows: pd.DataFrame  # raw rows to explain, schema columns only


@dataclass(frozen=True)
class Family:
    """A model family and what the engine must do with it."""

    id: str
    data: str  # key of DATA
    build: Callable[[Data], Pipeline]
    explainer: str  # the shap explainer class the engine is expected to use
    output_space: str
    reference: str  # "tree", "linear" or "permutation"
    library: str | None = None  # "xgboost" / "lightgbm": compare with the library's contributions
    single_precision: bool = False  # the library computes in float32
    sparse: bool = False  # the preprocessing emits a scipy sparse matrix
    fit_params: tuple[tuple[str, Any], ...] = ()
    rows: int = EXPLAINED_ROWS
    background_rows: int | None = None  # None: the data set's whole background sample


# -- data ---------------------------------------------------------------------------------------


def _german(target: dict, labels: Callable[[pd.Series], pd.Series]) -> Data:
    frame = german_credit()
    spec = german_schema()
    spec["target"] = target
    train = frame.iloc[:700]
    return Data(
        schema=parse_schema(spec),
        features=GERMAN_FEATURES,
        categorical=GERMAN_CATEGORICAL,
        numeric=GERMAN_NUMERIC,
        train=train[GERMAN_FEATURES],
        labels=labels(train["credit"]),
        background=frame.iloc[700 : 700 + LINEAR_BACKGROUND_ROWS][GERMAN_FEATURES],
        rows=frame.iloc[1000 - EXPLAINED_ROWS :][GERMAN_FEATURES],
    )


def _adult(regression: bool) -> Data:
    frame = adult()
    numeric = [n for n in ADULT_NUMERIC if not (regression and n == ADULT_REGRESSION_TARGET)]
    features = ADULT_CATEGORICAL + numeric
    categories = {
        name: sorted(str(v) for v in frame[name].unique().tolist()) for name in ADULT_CATEGORICAL
    }
    spec = {
        "features": [
            {"name": name, "type": "categorical", "categories": categories[name]}
            for name in ADULT_CATEGORICAL
        ]
        + [{"name": name, "type": "numeric"} for name in numeric],
        "target": (
            {"type": "regression"}
            if regression
            else {"type": "classification", "classes": [0, 1], "positive_class": 1}
        ),
    }
    train_split, test_split = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    train = train_split.iloc[:3000]
    labels = (
        train[ADULT_REGRESSION_TARGET].astype(float)
        if regression
        else (train["income"] == ">50K").astype(int)
    )
    return Data(
        schema=parse_schema(spec),
        features=features,
        categorical=ADULT_CATEGORICAL,
        numeric=numeric,
        train=_plain(train[features]),
        labels=labels,
        background=_plain(train_split.iloc[3000:3200][features]),
        rows=_plain(test_split.iloc[:EXPLAINED_ROWS][features]),
    )


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as Python strings (object), as Schema.frame gives them to a model."""
    frame = frame.copy()
    for name in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[name]):
            frame[name] = frame[name].astype(str).astype(object)
    return frame.reset_index(drop=True)


@cache
def data(key: str) -> Data:
    if key == "german":  # string labels; the positive class "bad" is classes_[0]
        return _german(
            {"type": "classification", "classes": ["good", "bad"], "positive_class": "bad"},
            lambda credit: credit,
        )
    if key == "german_codes":  # XGBoost learns integer classes: 1 is "bad"
        return _german(
            {"type": "classification", "classes": [0, 1], "positive_class": 1},
            lambda credit: (credit == "bad").astype(int),
        )
    if key == "adult":
        return _adult(regression=False)
    if key == "adult_hours":
        return _adult(regression=True)
    raise KeyError(key)


# -- pipelines ----------------------------------------------------------------------------------


def one_hot(d: Data, estimator, *, scale: bool = False, sparse: bool = False) -> Pipeline:
    """One-hot categoricals, numbers passed through (or scaled); dense unless `sparse`."""
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=sparse)
    prep = ColumnTransformer(
        [
            ("categorical", encoder, d.categorical),
            ("numeric", StandardScaler() if scale else "passthrough", d.numeric),
        ],
        # Adult's one-hot output is ~13 % non-zero: kept sparse, as its users get it.
        sparse_threshold=0.3 if sparse else 0.0,
    )
    return Pipeline([("prep", prep), ("model", estimator)])


def ordinal_lightgbm(d: Data) -> Pipeline:
    prep = ColumnTransformer(
        [
            ("categorical", OrdinalEncoder(), d.categorical),
            ("numeric", "passthrough", d.numeric),
        ]
    )
    model = LGBMClassifier(
        n_estimators=40, num_leaves=15, min_data_per_group=20, random_state=0, n_jobs=1, verbose=-1
    )
    return Pipeline([("prep", prep), ("model", model)])


def category_dtypes(frame: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """Categorical columns as pandas `category` with the schema's categories."""
    return frame.astype({name: pd.CategoricalDtype(categories[name]) for name in frame.columns})


def pandas_category_lightgbm(d: Data) -> Pipeline:
    categories = {f.name: list(f.categories) for f in d.schema.features if f.type == "categorical"}
    prep = ColumnTransformer(
        [
            (
                "categorical",
                FunctionTransformer(
                    category_dtypes,
                    kw_args={"categories": categories},
                    feature_names_out="one-to-one",
                ),
                d.categorical,
            ),
            ("numeric", "passthrough", d.numeric),
        ],
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    model = LGBMClassifier(
        n_estimators=40, num_leaves=15, min_data_per_group=20, random_state=0, n_jobs=1, verbose=-1
    )
    return Pipeline([("prep", prep), ("model", model)])


def _lgbm(**extra) -> LGBMClassifier:
    return LGBMClassifier(
        n_estimators=50, num_leaves=15, random_state=0, n_jobs=1, verbose=-1, **extra
    )


def _xgb() -> XGBClassifier:
    return XGBClassifier(n_estimators=60, max_depth=4, learning_rate=0.2, n_jobs=1, random_state=0)


FAMILIES = [
    Family(
        "gradient_boosting",
        "german",
        lambda d: one_hot(d, ensemble.GradientBoostingClassifier(n_estimators=60, random_state=0)),
        "TreeExplainer",
        "log_odds",
        "tree",
    ),
    Family(
        "hist_gradient_boosting",
        "german",
        lambda d: one_hot(
            d, HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=15, random_state=0)
        ),
        "TreeExplainer",
        "log_odds",
        "tree",
    ),
    Family(
        "random_forest",
        "german",
        lambda d: one_hot(
            d, RandomForestClassifier(n_estimators=40, max_depth=8, random_state=0, n_jobs=1)
        ),
        "TreeExplainer",
        "probability",
        "tree",
    ),
    Family(
        "extra_trees",
        "german",
        lambda d: one_hot(
            d, ExtraTreesClassifier(n_estimators=40, max_depth=8, random_state=0, n_jobs=1)
        ),
        "TreeExplainer",
        "probability",
        "tree",
    ),
    Family(
        "xgboost_dense",
        "german_codes",
        lambda d: one_hot(d, _xgb()),
        "TreeExplainer",
        "log_odds",
        "tree",
        library="xgboost",
        single_precision=True,
    ),
    Family(
        "xgboost_sparse_adult",
        "adult",
        lambda d: one_hot(d, _xgb(), sparse=True),
        "TreeExplainer",
        "log_odds",
        "tree",
        library="xgboost",
        single_precision=True,
        sparse=True,
    ),
    Family(
        "lightgbm",
        "german",
        lambda d: one_hot(d, _lgbm()),
        "TreeExplainer",
        "log_odds",
        "tree",
        library="lightgbm",
    ),
    Family(
        "lightgbm_sparse_adult",
        "adult",
        lambda d: one_hot(d, _lgbm(), sparse=True),
        "TreeExplainer",
        "log_odds",
        "tree",
        library="lightgbm",
        sparse=True,
    ),
    Family(
        "lightgbm_ordinal_categorical",
        "german",
        ordinal_lightgbm,
        "TreeExplainer",
        "log_odds",
        "tree",
        library="lightgbm",
        fit_params=(("model__categorical_feature", list(range(len(GERMAN_CATEGORICAL)))),),
    ),
    Family(
        "lightgbm_pandas_categorical",
        "german",
        pandas_category_lightgbm,
        "TreeExplainer",
        "log_odds",
        "tree",
        library="lightgbm",
    ),
    Family(
        "logistic_regression",
        "german",
        lambda d: one_hot(d, LogisticRegression(max_iter=2000), scale=True),
        "LinearExplainer",
        "log_odds",
        "linear",
    ),
    Family(
        "linear_svm",
        "german",
        lambda d: one_hot(d, LinearSVC(C=0.05, max_iter=20000, random_state=0), scale=True),
        "LinearExplainer",
        "decision_function",
        "linear",
    ),
    Family(
        "gradient_boosting_regressor_sparse_adult",
        "adult_hours",
        lambda d: one_hot(
            d, GradientBoostingRegressor(n_estimators=60, max_depth=3, random_state=0), sparse=True
        ),
        "TreeExplainer",
        "raw",
        "tree",
        sparse=True,
    ),
    Family(
        "mlp",
        "german",
        lambda d: one_hot(
            d,
            MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0),
            scale=True,
        ),
        "PermutationExplainer",
        "probability",
        "permutation",
        rows=AGNOSTIC_ROWS,
        background_rows=AGNOSTIC_BACKGROUND_ROWS,
    ),
]
BY_ID = {family.id: family for family in FAMILIES}


@cache
def trained(family_id: str) -> Pipeline:
    family = BY_ID[family_id]
    d = data(family.data)
    pipeline = family.build(d)
    return pipeline.fit(d.train, d.labels, **dict(family.fit_params))


def background_of(family: Family) -> pd.DataFrame:
    background = data(family.data).background
    if family.background_rows is not None:
        background = background.iloc[: family.background_rows]
    return background.reset_index(drop=True)


def rows_of(family: Family) -> list[dict]:
    """The raw rows to explain, as decisions carry them (Python str / int / float)."""
    frame = data(family.data).rows.iloc[: family.rows]
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


class GradientBoostingClassifier(ensemble.GradientBoostingClassifier):
    """A model whose own output is not what its trees compute: its margin is shifted.

    Same class name as scikit-learn's, so an engine that picks explainers by
    name treats it as the tree ensemble it is; TreeSHAP explains the trees, the
    decisions come from decision_function, and the two differ by SHIFT.
    """

    SHIFT = 0.5

    def decision_function(self, X):
        return super().decision_function(X) + self.SHIFT


def shifted_gradient_boosting() -> Pipeline:
    d = data("german")
    pipeline = one_hot(d, GradientBoostingClassifier(n_estimators=30, random_state=0))
    return pipeline.fit(d.train, d.labels)


def numpy_rows(values: Any) -> np.ndarray:
    return np.asarray(values.toarray() if hasattr(values, "toarray") else values, dtype=float)
