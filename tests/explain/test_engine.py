"""The explanation engine against independent shap / lime computations on real data."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import shap
from hypothesis import given
from hypothesis import strategies as st
from lightgbm import LGBMClassifier
from pandas.testing import assert_frame_equal
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from auditapp.demo.credit import SCHEMA as CREDIT_SCHEMA
from explain import engine, ranking
from explain.backends import backend
from explain.features import PerFeatureTransform, dense
from explain.frames import CategoryCodes, input_frame
from explain.lime_backend import LimeExplainer
from explain.schema import parse_schema
from explain.shap_backend import EXACT_TOLERANCE, SINGLE_PRECISION_TOLERANCE, ShapExplainer
from tests.datasets import GERMAN_CATEGORICAL, GERMAN_NUMERIC, german_credit, german_schema

FEATURES = GERMAN_CATEGORICAL + GERMAN_NUMERIC
EXACT = 1e-9


@pytest.fixture(scope="module")
def data():
    frame = german_credit()
    train, rest = frame.iloc[:700], frame.iloc[700:]
    return train, rest.iloc[:100], rest.iloc[100:]  # train, background, rows to explain


@pytest.fixture(scope="module")
def schema():
    return parse_schema(german_schema())


def one_hot_pipeline(estimator, scale: bool = False) -> Pipeline:
    numeric = StandardScaler() if scale else "passthrough"
    return Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), GERMAN_CATEGORICAL),
                        ("numeric", numeric, GERMAN_NUMERIC),
                    ]
                ),
            ),
            ("model", estimator),
        ]
    )


def context_for(model, schema, background) -> engine.ModelContext:
    return engine.ModelContext(
        model=model,
        schema=schema,
        background=background[FEATURES].reset_index(drop=True),
        background_sha256="b" * 64,
        artifact_sha256="a" * 64,
    )


def rows_of(frame: pd.DataFrame) -> list[dict]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame[FEATURES].to_dict(orient="records")
    ]


def independent_raw_attributions(pipeline: Pipeline, transformed_values: np.ndarray) -> np.ndarray:
    """Sum one-hot columns back onto features using the encoder's categories_ (not names)."""
    prep = pipeline.named_steps["prep"]
    encoder = prep.named_transformers_["categorical"]
    columns = []
    start = prep.output_indices_["categorical"].start
    for categories in encoder.categories_:
        columns.append(transformed_values[:, start : start + len(categories)].sum(axis=1))
        start += len(categories)
    numeric = prep.output_indices_["numeric"]
    columns.extend(transformed_values[:, numeric].T)
    return np.column_stack(columns)


def as_matrix(results) -> np.ndarray:
    return np.array([[r.attributions[name] for name in FEATURES] for r in results])


def positive_log_odds(model, frame) -> np.ndarray:
    bad = list(model.classes_).index("bad")
    probability = model.predict_proba(frame[FEATURES])[:, bad]
    return np.log(probability / (1 - probability))


def test_treeshap_of_a_one_hot_gbm_pipeline_equals_independent_shap(data, schema):
    train, background, explain_rows = data
    model = one_hot_pipeline(GradientBoostingClassifier(n_estimators=60, random_state=0))
    model.fit(train[FEATURES], train["credit"])

    results = engine.explain(
        context_for(model, schema, background), backend("shap"), rows_of(explain_rows), [0] * 200
    )

    transformed = model.named_steps["prep"].transform(explain_rows[FEATURES])
    reference = shap.TreeExplainer(model.named_steps["model"]).shap_values(transformed)
    # shap explains classes_[1] ("good"); the schema's positive class is "bad".
    assert list(model.classes_) == ["bad", "good"]
    expected = -independent_raw_attributions(model, np.asarray(reference))
    assert np.abs(as_matrix(results) - expected).max() < EXACT
    assert {r.explainer for r in results} == {"TreeExplainer"}
    assert {r.output_space for r in results} == {"log_odds"}
    totals = np.array([r.base_value + sum(r.attributions.values()) for r in results])
    assert np.allclose(totals, positive_log_odds(model, explain_rows), atol=1e-9)
    assert all(r.quality["additivity_ok"] for r in results)
    assert {r.quality["additivity_tolerance"] for r in results} == {EXACT_TOLERANCE}


def test_treeshap_of_lightgbm_equals_independent_shap(data, schema):
    train, background, explain_rows = data
    model = one_hot_pipeline(
        LGBMClassifier(n_estimators=50, num_leaves=15, random_state=0, verbose=-1)
    )
    model.fit(train[FEATURES], train["credit"])

    results = engine.explain(
        context_for(model, schema, background), backend("shap"), rows_of(explain_rows), [0] * 200
    )

    transformed = model.named_steps["prep"].transform(explain_rows[FEATURES])
    reference = np.asarray(shap.TreeExplainer(model.named_steps["model"]).shap_values(transformed))
    expected = -independent_raw_attributions(model, reference)
    assert np.abs(as_matrix(results) - expected).max() < EXACT
    totals = np.array([r.base_value + sum(r.attributions.values()) for r in results])
    assert np.allclose(totals, positive_log_odds(model, explain_rows), atol=1e-6)
    assert all(r.quality["additivity_ok"] for r in results)


def german_schema_with_codes() -> dict:
    """The German credit schema with the target as XGBoost's classes: 1 = bad (positive)."""
    spec = german_schema()
    spec["target"] = {"type": "classification", "classes": [0, 1], "positive_class": 1}
    return spec


def test_treeshap_of_xgboost_equals_independent_shap(data):
    train, background, explain_rows = data
    model = one_hot_pipeline(
        XGBClassifier(n_estimators=60, max_depth=4, learning_rate=0.2, n_jobs=1, random_state=0)
    )
    model.fit(train[FEATURES], (train["credit"] == "bad").astype(int))
    schema = parse_schema(german_schema_with_codes())

    results = engine.explain(
        context_for(model, schema, background), backend("shap"), rows_of(explain_rows), [0] * 200
    )

    transformed = model.named_steps["prep"].transform(explain_rows[FEATURES])
    reference = shap.TreeExplainer(model.named_steps["model"]).shap_values(transformed)
    # XGBoost computes in float32; both sides add its values up in float64.
    expected = independent_raw_attributions(model, np.asarray(reference, dtype=float))
    assert np.abs(as_matrix(results) - expected).max() < EXACT
    assert {r.explainer for r in results} == {"TreeExplainer"}
    assert {r.output_space for r in results} == {"log_odds"}
    probability = model.predict_proba(explain_rows[FEATURES])[:, 1]
    totals = np.array([r.base_value + sum(r.attributions.values()) for r in results])
    assert np.allclose(totals, np.log(probability / (1 - probability)), atol=1e-5)
    # XGBoost adds up in float32: the check allows for that arithmetic, and says so.
    assert all(r.quality["additivity_ok"] for r in results)
    assert {r.quality["additivity_tolerance"] for r in results} == {SINGLE_PRECISION_TOLERANCE}


def test_linear_shap_of_a_scaled_logistic_regression_equals_independent_shap(data, schema):
    train, background, explain_rows = data
    model = one_hot_pipeline(LogisticRegression(max_iter=2000), scale=True)
    model.fit(train[FEATURES], train["credit"])

    results = engine.explain(
        context_for(model, schema, background), backend("shap"), rows_of(explain_rows), [0] * 200
    )

    prep, estimator = model.named_steps["prep"], model.named_steps["model"]
    masker = prep.transform(background[FEATURES])
    reference = shap.LinearExplainer(estimator, masker).shap_values(
        prep.transform(explain_rows[FEATURES])
    )
    expected = -independent_raw_attributions(model, np.asarray(reference))
    assert np.abs(as_matrix(results) - expected).max() < EXACT
    assert {r.explainer for r in results} == {"LinearExplainer"}
    assert all(r.quality["additivity_ok"] for r in results)


def test_model_agnostic_shap_of_an_mlp_equals_independent_permutation_shap(data, schema):
    train, background, explain_rows = data
    model = one_hot_pipeline(
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0), scale=True
    )
    model.fit(train[FEATURES], train["credit"])
    context = context_for(model, schema, background)
    rows = rows_of(explain_rows.iloc[:3])

    results = engine.explain(context, backend("shap"), rows, [11, 12, 13])

    explainer = ShapExplainer(context)
    assert explainer.kind == "agnostic"
    bad = list(model.classes_).index("bad")

    def pipeline_probability(codes: np.ndarray) -> np.ndarray:
        """The whole pipeline on every evaluated row (the engine takes it apart by feature)."""
        return model.predict_proba(explainer.codes.decode(codes))[:, bad]

    reference = shap.PermutationExplainer(
        pipeline_probability, shap.maskers.Independent(explainer.background_array)
    )
    encoded = explainer.codes.encode(schema.frame(rows))
    probabilities = model.predict_proba(schema.frame(rows))[:, bad]
    for row, seed, result, probability in zip(
        encoded, [11, 12, 13], results, probabilities, strict=True
    ):
        np.random.seed(seed)  # shap's documented meaning of a permutation seed
        expected = reference(row.reshape(1, -1), max_evals=explainer.max_evals, silent=True)
        assert np.abs(as_matrix([result])[0] - expected.values[0]).max() < EXACT
        assert result.output_space == "probability"
        assert result.quality["additivity_ok"], result.quality
        total = result.base_value + sum(result.attributions.values())
        assert total == pytest.approx(probability, abs=1e-9)


@pytest.fixture(scope="module")
def scaled_mlp(data):
    train, _, _ = data
    model = one_hot_pipeline(
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0), scale=True
    )
    return model.fit(train[FEATURES], train["credit"])


def per_feature(model, schema, background) -> tuple[PerFeatureTransform | None, CategoryCodes]:
    codes = CategoryCodes(schema)
    assembly = PerFeatureTransform.build(
        model[:-1],
        schema,
        lambda array: model[:-1].transform(codes.decode(array)),
        codes.encode(background[FEATURES]),
    )
    return assembly, codes


def test_the_preprocessing_taken_apart_by_feature_gives_the_real_transform_to_the_bit(
    data, schema, scaled_mlp
):
    _, background, explain_rows = data
    assembly, codes = per_feature(scaled_mlp, schema, background)
    assert assembly is not None
    known = codes.encode(background[FEATURES])
    generator = np.random.default_rng(7)
    for row in codes.encode(explain_rows[FEATURES].iloc[:5]):
        assembly.use_row(row)
        # Rows as shap's masker makes them: each feature from the row or a background row.
        mixed = np.where(generator.random(known.shape) < 0.3, row, known)
        real = scaled_mlp[:-1].transform(codes.decode(mixed))
        assembled = assembly(mixed)
        assert scipy.sparse.issparse(assembled) == scipy.sparse.issparse(real)
        assert np.array_equal(dense(assembled), dense(real))
    unknown = mixed.copy()
    unknown[0, FEATURES.index("month")] = 1e9  # a value no known row holds
    assert assembly(unknown) is None


def test_a_preprocessing_without_an_encoder_is_run_not_assembled(data, schema):
    """Scaled numbers alone: transforming costs less than looking them up, so each
    evaluation runs the preprocessing, as before (the numbers would be the same)."""
    train, background, _ = data
    model = Pipeline(
        [
            ("prep", ColumnTransformer([("numeric", StandardScaler(), GERMAN_NUMERIC)])),
            ("model", LogisticRegression(max_iter=500)),
        ]
    ).fit(train[FEATURES], train["credit"])
    assembly, _ = per_feature(model, schema, background)
    assert assembly is None
    explainer = ShapExplainer(context_for(model, schema, background), {"model_agnostic": True})
    assert explainer.kind == "agnostic" and explainer.assembly is None


class ScalerOfTheBatch(StandardScaler):
    """Calls itself a scaler, but centres each batch on its own mean: rows mix."""

    def transform(self, X, copy=None):
        out = super().transform(X, copy=copy)
        return out - out.mean(axis=0)


@pytest.mark.parametrize(
    "numeric",
    [
        FunctionTransformer(
            lambda X: np.asarray(X) / np.asarray(X).sum(axis=1, keepdims=True),
            feature_names_out="one-to-one",
        ),
        ScalerOfTheBatch(),
    ],
    ids=["declared one-to-one but mixes columns", "a scaler subclass that mixes rows"],
)
def test_a_preprocessing_that_mixes_values_is_never_taken_apart(data, schema, numeric):
    train, background, _ = data
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), GERMAN_CATEGORICAL),
                        ("numeric", numeric, GERMAN_NUMERIC),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=500)),
        ]
    ).fit(train[FEATURES], train["credit"])
    assembly, _ = per_feature(model, schema, background)
    assert assembly is None


def test_model_agnostic_shap_transforms_once_a_row_not_once_an_evaluation(
    data, schema, scaled_mlp, monkeypatch
):
    _, background, explain_rows = data
    prep = scaled_mlp.named_steps["prep"]
    calls = []
    transform = prep.transform
    monkeypatch.setattr(prep, "transform", lambda X: calls.append(len(X)) or transform(X))
    context = context_for(scaled_mlp, schema, background)
    rows = rows_of(explain_rows.iloc[:3])
    explainer = ShapExplainer(context)
    calls.clear()  # those that built it

    results = engine.explain(context, backend("shap"), rows, [11, 12, 13], {"explainer": explainer})

    assert all(r.ok and r.quality["additivity_ok"] for r in results)
    # The batch's own outputs, then one a row: not one for each of the ~12 batches of
    # masked rows that shap evaluates a row (36 or more here).
    assert len(calls) == 1 + len(rows), calls


def test_lime_gives_the_same_weights_for_the_same_seed_and_other_weights_for_another(data, schema):
    train, background, explain_rows = data
    model = one_hot_pipeline(GradientBoostingClassifier(n_estimators=30, random_state=0))
    model.fit(train[FEATURES], train["credit"])
    context = context_for(model, schema, background)
    rows = rows_of(explain_rows.iloc[:2])

    first = engine.explain(context, backend("lime"), rows, [7, 8], {"num_samples": 1000})
    again = engine.explain(context, backend("lime"), rows, [7, 8], {"num_samples": 1000})
    other = engine.explain(context, backend("lime"), rows, [9, 10], {"num_samples": 1000})

    assert [r.attributions for r in first] == [r.attributions for r in again]
    assert first[0].attributions != other[0].attributions
    assert set(first[0].attributions) == set(FEATURES)
    assert 0.0 <= first[0].quality["fidelity_r2"] <= 1.0
    assert first[0].seed == 7 and first[0].config["num_samples"] == 1000


def test_lime_treats_categorical_features_as_categories(data, schema):
    train, background, _ = data
    model = one_hot_pipeline(GradientBoostingClassifier(n_estimators=10, random_state=0))
    model.fit(train[FEATURES], train["credit"])
    explainer = LimeExplainer(context_for(model, schema, background))
    categorical = {FEATURES[i] for i in explainer.explainer.categorical_features}
    # Every categorical column is a category; numeric ones are discretised into quartiles.
    assert set(GERMAN_CATEGORICAL) <= categorical
    assert explainer.explainer.categorical_names[0] == sorted(german_credit()["status"].unique())


def test_a_cached_explainer_and_a_fresh_one_agree_so_rerunning_from_the_record_reproduces(
    data, schema
):
    train, background, explain_rows = data
    model = one_hot_pipeline(GradientBoostingClassifier(n_estimators=30, random_state=0))
    model.fit(train[FEATURES], train["credit"])
    context = context_for(model, schema, background)
    rows = rows_of(explain_rows.iloc[:3])
    cached = LimeExplainer(context, {"num_samples": 800})
    engine.explain(context, backend("lime"), rows, [1, 2, 3], {"explainer": cached})  # warm it up

    stored = engine.explain(context, backend("lime"), rows, [4, 5, 6], {"explainer": cached})
    rerun = [
        engine.explain(
            context, backend("lime"), [row], [r.seed], {"num_samples": r.config["num_samples"]}
        )[0]
        for row, r in zip(rows, stored, strict=True)
    ]
    assert [r.attributions for r in rerun] == [r.attributions for r in stored]


def test_one_bad_row_fails_alone_with_its_reason(data, schema):
    train, background, explain_rows = data
    strict = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(handle_unknown="error"), GERMAN_CATEGORICAL),
                        ("numeric", "passthrough", GERMAN_NUMERIC),
                    ]
                ),
            ),
            ("model", GradientBoostingClassifier(n_estimators=10, random_state=0)),
        ]
    ).fit(train[FEATURES], train["credit"])
    rows = rows_of(explain_rows.iloc[:3])
    rows[1]["purpose"] = "A47"  # in the schema's list? no: never seen in training

    results = engine.explain(
        context_for(strict, schema, background), backend("shap"), rows, [0, 0, 0]
    )

    assert [r.ok for r in results] == [True, False, True]
    assert "A47" in results[1].error or "unknown" in results[1].error.lower()


def test_agreement_counts_shared_top_features_and_rank_correlation():
    shap_attr = {"a": 3.0, "b": -2.0, "c": 1.0, "d": 0.1}
    lime_attr = {"a": 0.3, "b": 0.2, "c": -0.01, "d": 0.05}
    result = engine.agreement(shap_attr, lime_attr)
    assert result["top_k"] == 3
    assert result["top_k_overlap"] == pytest.approx(2 / 3)
    assert result["rank_correlation"] == pytest.approx(0.8)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=4).map(float),
            st.floats(min_value=-5, max_value=5, allow_nan=False, width=16),
        ),
        min_size=3,
        max_size=12,
    )
)
def test_rank_agreement_equals_scipys_spearman(pairs):
    from scipy.stats import spearmanr

    shap_attr = {f"f{i}": a for i, (a, _) in enumerate(pairs)}
    lime_attr = {f"f{i}": b for i, (_, b) in enumerate(pairs)}
    ours = engine.agreement(shap_attr, lime_attr)["rank_correlation"]
    a = [abs(v) for v in shap_attr.values()]
    b = [abs(v) for v in lime_attr.values()]
    if ours is None:
        assert np.ptp(a) == 0 or np.ptp(b) == 0
    else:
        assert ours == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


@given(
    st.lists(
        st.lists(st.integers(min_value=-3, max_value=3).map(float), min_size=12, max_size=12),
        min_size=1,
        max_size=5,
    )
)
def test_ranking_a_whole_batch_orders_every_row_as_ranking_it_alone(matrix):
    # Few distinct values, so that ties (broken by name) are common.
    names = [f"f{i:02d}" for i in (7, 3, 11, 0, 5, 9, 1, 10, 2, 8, 4, 6)]
    ranked = ranking.rank_rows(np.array(matrix), names)
    assert ranked == [ranking.rank_features(dict(zip(names, row, strict=True))) for row in matrix]


def test_the_fast_input_frame_equals_the_schemas_frame_for_every_feature_type(schema):
    german = rows_of(german_credit().iloc[:50])
    assert_frame_equal(input_frame(schema, german), schema.frame(german))

    credit = parse_schema(CREDIT_SCHEMA)  # integer, numeric, categorical and boolean features
    rows = [
        {
            f.name: (
                f.categories[i % len(f.categories)]
                if f.type == "categorical"
                else bool(i % 2)
                if f.type == "boolean"
                else i * 3
                if f.type == "integer"
                else i / 7
            )
            for f in credit.features
        }
        for i in range(6)
    ]
    assert_frame_equal(input_frame(credit, rows), credit.frame(rows))
    for row in rows:  # one row, as a single prediction or what-if builds it
        assert_frame_equal(input_frame(credit, [row]), credit.frame([row]))
    nulls = [dict(row) for row in rows]
    for feature in credit.features:
        nulls[2][feature.name] = None  # nullable booleans and integers change dtype
    assert_frame_equal(input_frame(credit, nulls), credit.frame(nulls))

    numeric = parse_schema(
        {
            "features": [{"name": n, "type": "numeric", "nullable": True} for n in ("a", "b")],
            "target": {"type": "regression"},
        }
    )
    values = [{"a": 1, "b": 0.5}, {"a": None, "b": -2.25}]
    assert_frame_equal(input_frame(numeric, values), numeric.frame(values))
    assert_frame_equal(input_frame(numeric, [{"a": 1}]), numeric.frame([{"a": 1}]))  # missing


@pytest.mark.parametrize(
    ("method", "options"), [("shap", {}), ("lime", {"num_samples": 500})], ids=["shap", "lime"]
)
def test_an_explainer_gives_the_same_numbers_from_threads_at_once(
    data, schema, scaled_mlp, method, options
):
    """A web process serves what-ifs from threads, with one cached explainer a version:
    explained at once, rows must get the numbers they get one after the other (the MLP's
    SHAP is model-agnostic: permutations drawn from NumPy's global generator)."""
    _, background, explain_rows = data
    context = context_for(scaled_mlp, schema, background)
    explainer = backend(method).explainer(context, options)
    rows = rows_of(explain_rows.iloc[:6])
    seeds = list(range(21, 27))

    def explain_all(order: list[int]) -> dict[int, engine.ExplanationResult]:
        return {
            i: engine.explain(
                context, backend(method), [rows[i]], [seeds[i]], {"explainer": explainer}
            )[0]
            for i in order
        }

    alone = explain_all(list(range(6)))
    orders = [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 3, 4, 5, 0, 1]]
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(explain_all, orders))

    for found in answers:
        for i, result in found.items():
            assert result.attributions == alone[i].attributions, i
            assert result.base_value == alone[i].base_value
