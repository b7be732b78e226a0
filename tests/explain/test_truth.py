"""The two explanations that were certified while wrong, reproduced on real data.

1. XGBoost behind a sparse one-hot pipeline: the engine densified the sparse
   matrix, XGBoost read its zeros as values instead of missing entries, and the
   additivity check compared against a recomputation on the same densified input.
2. The linear explainer kept 100 of the background's rows while the recorded
   configuration said all of them.

Both are judged against the pipeline's own output on the raw inputs (what
production ran) and against an independent closed form, never along the
engine's own path.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import xgboost
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from auditapp.reviews import rules
from explain import engine
from explain.backends import backend
from explain.schema import parse_schema
from tests.datasets import adult

CATEGORICAL = ["workclass", "education", "marital-status", "occupation", "relationship", "sex"]
NUMERIC = ["age", "capital-gain", "capital-loss", "hours-per-week"]
FEATURES = CATEGORICAL + NUMERIC


@pytest.fixture(scope="module")
def adult_split():
    frame = adult()
    frame = frame.assign(target=(frame["income"] == ">50K").astype(int))
    train = frame[frame["split"] == "train"]
    test = frame[frame["split"] == "test"]
    return train.iloc[:3000], train.iloc[3000:3300], test.iloc[:200]


@pytest.fixture(scope="module")
def schema(adult_split):
    frame = adult()
    return parse_schema(
        {
            "features": [
                {"name": n, "type": "categorical", "categories": sorted(frame[n].unique())}
                for n in CATEGORICAL
            ]
            + [{"name": n, "type": "numeric"} for n in NUMERIC],
            "target": {"type": "classification", "classes": [0, 1], "positive_class": 1},
        }
    )


def rows_of(frame: pd.DataFrame) -> list[dict]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame[FEATURES].to_dict(orient="records")
    ]


def context_for(model, schema, background) -> engine.ModelContext:
    return engine.ModelContext(
        model=model,
        schema=schema,
        background=schema.frame(rows_of(background)),
        background_sha256="b" * 64,
        artifact_sha256="a" * 64,
    )


def test_sparse_xgboost_explanations_add_up_to_the_pipelines_own_margin(adult_split, schema):
    train, background, rows = adult_split
    prep = ColumnTransformer(
        [("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)],
        remainder="passthrough",
        sparse_threshold=0.3,
    )
    model = XGBClassifier(n_estimators=30, max_depth=4, n_jobs=1, random_state=0)
    pipeline = Pipeline([("prep", prep), ("model", model)]).fit(train[FEATURES], train["target"])
    transformed = pipeline[:-1].transform(rows[FEATURES])
    assert scipy.sparse.issparse(transformed)  # the situation the defect needs

    margin = pipeline.predict(rows[FEATURES], output_margin=True)  # what production decided
    contribs = model.get_booster().predict(xgboost.DMatrix(transformed), pred_contribs=True)
    assert np.allclose(contribs.sum(axis=1), margin, atol=1e-4)  # XGBoost's own TreeSHAP agrees
    densified = model.get_booster().predict(
        xgboost.DMatrix(transformed.toarray()), pred_contribs=True
    )
    assert (
        np.abs(densified.sum(axis=1) - margin).max() > 0.1
    )  # densifying explains another function

    results = engine.explain(
        context_for(pipeline, schema, background), backend("shap"), rows_of(rows), [0] * len(rows)
    )
    totals = np.array([r.base_value + sum(r.attributions.values()) for r in results])
    np.testing.assert_allclose(totals, margin, rtol=1e-4, atol=1e-4)
    assert all(r.quality["additivity_ok"] for r in results)
    np.testing.assert_allclose([r.quality["model_output"] for r in results], margin, rtol=1e-6)
    # Each raw feature gets the sum of XGBoost's own contributions of its columns.
    columns = pipeline[:-1].get_feature_names_out()
    education = [i for i, c in enumerate(columns) if c.startswith("categorical__education_")]
    np.testing.assert_allclose(
        [r.attributions["education"] for r in results],
        contribs[:, education].sum(axis=1),
        rtol=1e-5,
        atol=1e-6,
    )


def test_linear_explainer_uses_every_background_row_it_records(adult_split, schema):
    train, _, rows = adult_split
    background = train.iloc[:300]  # more than shap's default of 100
    prep = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("numeric", StandardScaler(), NUMERIC),
        ]
    )
    pipeline = Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=1000))])
    pipeline.fit(train[FEATURES], train["target"])
    context = context_for(pipeline, schema, background)
    results = engine.explain(context, backend("shap"), rows_of(rows), [0] * len(rows))

    # Exact interventional linear SHAP, in closed form: coef * (x - mean of ALL background rows).
    transform = pipeline[:-1].transform
    coef = pipeline[-1].coef_[0]
    mean = np.asarray(transform(context.background).mean(axis=0)).ravel()
    phi = (np.asarray(transform(rows[FEATURES]).todense()) - mean) * coef
    base = float(pipeline[-1].intercept_[0] + mean @ coef)
    assert results[0].config["background_rows"] == 300
    for result, row_phi in zip(results, phi, strict=True):
        assert result.base_value == pytest.approx(base, abs=1e-9)
        names = pipeline[:-1].get_feature_names_out()
        assert result.attributions["age"] == pytest.approx(
            row_phi[list(names).index("numeric__age")], abs=1e-9
        )
        assert result.quality["additivity_ok"]
    rows_used = context.background.to_csv(index=False).encode()
    assert results[0].config["background_rows_sha256"] == hashlib.sha256(rows_used).hexdigest()
    assert results[0].config["masker"] == "Independent"


def test_one_hot_columns_go_to_their_own_feature_even_when_a_name_prefixes_another():
    """ "income" must not take "income_band"'s columns (the names alone cannot tell)."""
    frame = pd.DataFrame(
        {
            "income": ["low", "high", "low", "band_a"] * 25,
            "income_band": ["a", "b", "b", "a"] * 25,
            "age": np.arange(100, dtype=float),
        }
    )
    target = ((frame["income"] == "high") | (frame["age"] > 70)).astype(int)
    prep = ColumnTransformer(
        [("onehot", OneHotEncoder(), ["income", "income_band"])], remainder="passthrough"
    )
    pipeline = Pipeline([("prep", prep), ("model", LogisticRegression())]).fit(frame, target)
    schema = parse_schema(
        {
            "features": [
                {"name": "income", "type": "categorical", "categories": ["band_a", "high", "low"]},
                {"name": "income_band", "type": "categorical", "categories": ["a", "b"]},
                {"name": "age", "type": "numeric"},
            ],
            "target": {"type": "classification", "classes": [0, 1], "positive_class": 1},
        }
    )
    context = engine.ModelContext(pipeline, schema, frame, "b" * 64, "a" * 64)
    row = {"income": "band_a", "income_band": "a", "age": 30.0}
    (result,) = engine.explain(context, backend("shap"), [row], [0])

    coef = pipeline[-1].coef_[0]
    mean = np.asarray(pipeline[:-1].transform(frame).mean(axis=0)).ravel()
    phi = (pipeline[:-1].transform(pd.DataFrame([row])) - mean) * coef
    assert result.attributions["income"] == pytest.approx(phi[0, :3].sum(), abs=1e-12)
    assert result.attributions["income_band"] == pytest.approx(phi[0, 3:5].sum(), abs=1e-12)
    assert result.attributions["age"] == pytest.approx(phi[0, 5], abs=1e-12)


def test_a_recorded_score_that_is_not_the_models_own_is_flagged(adult_split, schema):
    train, background, rows = adult_split
    prep = ColumnTransformer(
        [("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)],
        remainder="passthrough",
    )
    model = XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1, random_state=0)
    pipeline = Pipeline([("prep", prep), ("model", model)]).fit(train[FEATURES], train["target"])
    own = pipeline.predict_proba(rows[FEATURES].iloc[:3])[:, 1]
    recorded = [round(float(own[0]), 3), float(own[1]) + 0.05, None]

    results = engine.explain(
        context_for(pipeline, schema, background),
        backend("shap"),
        rows_of(rows.iloc[:3]),
        [0, 0, 0],
        scores=recorded,
    )

    assert results[0].quality["score_ok"] is True  # rounding to three decimals passes
    assert results[0].quality["model_score"] == pytest.approx(own[0], abs=1e-7)
    assert results[1].quality["score_ok"] is False
    assert results[1].quality["score_error"] == pytest.approx(0.05, abs=1e-6)
    assert results[1].quality["additivity_ok"] is True  # the explanation itself is right
    assert "score_ok" not in results[2].quality  # nothing recorded, nothing to compare


def test_a_score_mismatch_is_a_reason_to_review_the_decision():
    explanation = SimpleNamespace(
        method="shap",
        status="done",
        quality={
            "additivity_ok": True,
            "model_score": 0.31,
            "recorded_score": 0.72,
            "score_error": 0.41,
            "score_tolerance": 0.001,
            "score_ok": False,
        },
    )
    assert rules.explanation_reasons(explanation) == [
        {
            "rule": rules.SCORE_MISMATCH,
            "detail": "recorded 0.7200, the registered model gives 0.3100 (tolerance 0.001)",
        }
    ]
    explanation.quality["score_ok"] = True
    assert rules.explanation_reasons(explanation) == []
