"""Counterfactuals (explain/counterfactual.py) on real pipelines: every one is re-scored here,
independently, by the loaded pipeline's own predict / predict_proba, and flips; no immutable
or protected feature ever changes; directions, bounds and steps hold; a seed reproduces.

Models: the demo's gradient-boosting pipeline (one-hot categoricals, a boolean), XGBoost and
LightGBM pipelines on German credit (tests/data/), and a scaled MLP, which Attest explains
model-agnostically. No database: the engine runs without the project.
"""

from __future__ import annotations

import copy
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightgbm import LGBMClassifier
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from auditapp.demo import credit
from explain import counterfactual as cf
from explain.engine import ModelContext
from explain.schema import parse_schema
from explain.shap_backend import explainer_kind
from tests.datasets import GERMAN_CATEGORICAL, GERMAN_NUMERIC, german_credit, german_schema

GERMAN = GERMAN_CATEGORICAL + GERMAN_NUMERIC
INSTANCES = 5


def plain(frame: pd.DataFrame) -> list[dict]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def credit_actionable() -> dict:
    """The demo schema with its actionability declared: what an applicant could change."""
    spec = copy.deepcopy(credit.SCHEMA)
    extra = {
        "prior_defaults": {"immutable": True},  # the past does not change
        "employment_years": {"direction": "increase"},
        "income": {"direction": "increase", "step": 100},
        "loan_amount": {"direction": "decrease", "step": 500},
        "debt_ratio": {"direction": "decrease", "step": 0.01},
    }
    for feature in spec["features"]:
        feature.update(extra.get(feature["name"], {}))
    return spec


def german_actionable(classes: list) -> dict:
    spec = german_schema()  # age and personal_status are protected
    extra = {
        "credit_history": {"immutable": True},
        "foreign_worker": {"immutable": True},
        "month": {"direction": "decrease", "min": 4, "max": 72, "step": 1},
        "credit_amount": {"direction": "decrease", "min": 250, "step": 50},
        "residence_since": {"direction": "increase", "max": 4},
    }
    for feature in spec["features"]:
        feature.update(extra.get(feature["name"], {}))
    if classes == [0, 1]:
        spec["target"] = {"type": "classification", "classes": [0, 1], "positive_class": 1}
    return spec


def one_hot(categorical: list[str], estimator, scale: list[str] | None = None) -> Pipeline:
    steps = [("categorical", OneHotEncoder(handle_unknown="ignore"), categorical)]
    if scale:
        steps.append(("numeric", StandardScaler(), scale))
    prep = ColumnTransformer(steps, remainder="passthrough")
    return Pipeline([("prep", prep), ("model", estimator)])


class Case:
    """A fitted pipeline, its schema, background, and adverse instances to explain."""

    def __init__(self, name, model, spec, background, candidates, favourable):
        self.name = name
        self.model = model
        self.schema = parse_schema(spec)
        self.spec = spec
        self.context = ModelContext(model, self.schema, background, "b" * 64, "a" * 64)
        self.favourable = favourable
        frame = candidates[self.schema.names]
        adverse = frame[model.predict(frame).astype(str) != str(favourable)]
        self.instances = plain(adverse.head(INSTANCES))
        assert len(self.instances) == INSTANCES
        self.search = cf.search_for(self.context)


@pytest.fixture(scope="module")
def demo_gbm() -> Case:
    frame = credit.applicants(6000, seed=7)  # as load_demo trains it
    model = credit.train_model(frame.iloc[:4000])
    background = frame[credit.FEATURES].iloc[4000:4500].reset_index(drop=True)
    return Case("demo GBM", model, credit_actionable(), background, frame.iloc[5000:], "good")


@pytest.fixture(scope="module")
def demo_mlp() -> Case:
    frame = credit.applicants(3000, seed=5)
    numeric = [n for n in credit.NUMERIC if n != "has_guarantor"]
    model = one_hot(
        credit.CATEGORICAL,
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=600, random_state=0),
        scale=numeric,
    )
    with warnings.catch_warnings():  # it has not converged: a model all the same
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(frame[credit.FEATURES].iloc[:2000], frame["outcome"].iloc[:2000])
    background = frame[credit.FEATURES].iloc[2000:2400].reset_index(drop=True)
    return Case("MLP", model, credit_actionable(), background, frame.iloc[2400:], "good")


@pytest.fixture(scope="module")
def german_xgb() -> Case:
    frame = german_credit()
    model = one_hot(
        GERMAN_CATEGORICAL,
        XGBClassifier(n_estimators=60, max_depth=4, n_jobs=1, random_state=0),
    )
    model.fit(frame[GERMAN].iloc[:700], (frame["credit"].iloc[:700] == "bad").astype(int))
    background = frame[GERMAN].iloc[700:900].reset_index(drop=True)
    return Case("XGBoost", model, german_actionable([0, 1]), background, frame.iloc[900:], 0)


@pytest.fixture(scope="module")
def german_lgbm() -> Case:
    frame = german_credit()
    model = one_hot(
        GERMAN_CATEGORICAL,
        LGBMClassifier(n_estimators=60, num_leaves=15, random_state=0, verbose=-1, n_jobs=1),
    )
    model.fit(frame[GERMAN].iloc[:700], frame["credit"].iloc[:700])
    background = frame[GERMAN].iloc[700:900].reset_index(drop=True)
    return Case(
        "LightGBM", model, german_actionable(["good", "bad"]), background, frame.iloc[900:], "good"
    )


CASES = ["demo_gbm", "german_xgb", "german_lgbm", "demo_mlp"]


def check_rules(schema, original: dict, counterfactual: cf.Counterfactual) -> None:
    """The schema's rules, read from the schema document, for every change."""
    changed = {n for n in schema.names if counterfactual.inputs[n] != original[n]}
    assert changed == set(counterfactual.changes)
    assert counterfactual.sparsity == len(changed) >= 1
    for feature in schema.features:
        name = feature.name
        before, after = original[name], counterfactual.inputs[name]
        if name not in changed:
            continue
        assert counterfactual.changes[name] == {"from": before, "to": after}
        assert not feature.protected, f"{name} is protected but changed"
        assert not feature.immutable, f"{name} is immutable but changed"
        assert feature.value_error(after) is None, (name, after)
        if feature.direction == "increase":
            assert after > before, (name, before, after)
        if feature.direction == "decrease":
            assert after < before, (name, before, after)
        if feature.step is not None:
            anchor = feature.minimum if feature.minimum is not None else 0
            units = (after - anchor) / feature.step
            assert math.isclose(units, round(units), abs_tol=1e-6), (name, after, feature.step)
        if feature.type == "integer":
            assert isinstance(after, int) and not isinstance(after, bool)


def independent_scores(case: Case, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The loaded pipeline's own calls on the reference frame (Schema.frame), not the engine's."""
    frame = case.schema.frame(rows)
    labels = case.model.predict(frame)
    positive = [str(c) for c in case.model.classes_].index(str(case.schema.target.positive_class))
    return labels, case.model.predict_proba(frame)[:, positive]


@pytest.mark.parametrize("name", CASES)
def test_every_counterfactual_flips_when_scored_independently_and_keeps_the_rules(name, request):
    case: Case = request.getfixturevalue(name)
    explained = 0
    for n, instance in enumerate(case.instances):
        result = case.search.explain(instance, seed=n)
        assert result.ok, result.error
        assert result.original["favourable"] is False
        assert len(result.counterfactuals) <= 3
        if not result.counterfactuals:
            assert result.note
            continue
        explained += 1
        rows = [c.inputs for c in result.counterfactuals]
        labels, scores = independent_scores(case, rows)
        for counterfactual, label, score in zip(
            result.counterfactuals, labels, scores, strict=True
        ):
            assert str(label) == str(case.favourable), (case.name, counterfactual.changes)
            assert counterfactual.prediction == (label.item() if hasattr(label, "item") else label)
            assert counterfactual.score == pytest.approx(float(score), abs=1e-12)
            check_rules(case.schema, instance, counterfactual)
            assert counterfactual.distance > 0
            assert counterfactual.plausibility is not None and counterfactual.plausibility >= 0
        quality = result.quality
        assert quality["validity"] == 1.0
        assert quality["found"] == len(result.counterfactuals)
        assert quality["mean_sparsity"] == pytest.approx(
            np.mean([c.sparsity for c in result.counterfactuals])
        )
        # k diverse: no two the same changes
        keys = [repr(sorted(c.changes.items())) for c in result.counterfactuals]
        assert len(set(keys)) == len(keys)
    assert explained >= INSTANCES - 1, f"{case.name}: only {explained} explained"


def test_the_mlp_is_the_model_agnostic_path_and_the_trees_are_not(demo_mlp, german_xgb):
    assert explainer_kind(demo_mlp.model[-1]) == "agnostic"
    assert explainer_kind(german_xgb.model[-1]) == "tree"


@pytest.mark.parametrize("name", ["demo_gbm", "german_xgb"])
def test_the_same_seed_gives_the_same_result(name, request):
    case: Case = request.getfixturevalue(name)
    for instance in case.instances[:3]:
        first = case.search.explain(instance, seed=7).document()
        again = cf.search_for(case.context).explain(instance, seed=7).document()
        assert again == first


def test_a_result_records_what_reproduces_it(demo_gbm):
    result = demo_gbm.search.explain(demo_gbm.instances[0], seed=3)
    assert result.method == "sparse-search"
    assert result.seed == 3
    assert result.goal == {"favourable_class": "good"}
    assert result.config["k"] == 3
    assert result.config["artifact_sha256"] == "a" * 64
    assert result.config["background_sha256"] == "b" * 64
    assert {"numpy", "pandas", "scikit-learn"} <= set(result.library_versions)
    assert set(result.config["spreads"]) == {
        "age",
        "income",
        "debt_ratio",
        "employment_years",
        "loan_amount",
        "prior_defaults",
    }
    document = result.document()
    assert document["counterfactuals"][0]["changes"] == result.counterfactuals[0].changes
    # Plain JSON, no NaN: what a canonical hash of a stored result needs.
    assert json.loads(json.dumps(document, allow_nan=False)) == document
    # Replayed from the record alone: the same counterfactuals.
    options = {key: result.config[key] for key in cf.DEFAULTS}
    replay = cf.search_for(demo_gbm.context, options).explain(
        demo_gbm.instances[0], seed=result.seed, k=result.config["k"]
    )
    assert replay.document() == document


def test_xgboost_records_its_library(german_xgb):
    result = german_xgb.search.explain(german_xgb.instances[0], seed=0)
    assert "xgboost" in result.library_versions


def test_a_decision_that_only_a_protected_or_immutable_feature_could_flip_has_none():
    """Impossible by construction: the model decides by age (protected) and prior defaults
    (immutable) alone, so no allowed change can flip it; the search says so."""
    spec = credit_actionable()
    schema = parse_schema(spec)

    def labels(frame: pd.DataFrame) -> np.ndarray:
        adverse = (frame["age"] < 30) | (frame["prior_defaults"] > 0)
        return np.where(adverse, "bad", "good")

    def scores(frame: pd.DataFrame) -> np.ndarray:
        return (labels(frame) == "bad").astype(float)

    background = credit.applicants(300, seed=1)[credit.FEATURES]
    search = cf.CounterfactualSearch(
        schema, background, cf.Predictor(labels, scores), cf.goal_for(schema)
    )
    young = plain(background[background["age"] < 30].head(3))
    defaulted = plain(background[background["prior_defaults"] > 0].head(3))
    for instance in young + defaulted:
        result = search.explain(instance, seed=0)
        assert result.ok, result.error
        assert result.counterfactuals == []
        assert "no change" in result.note
        assert result.quality["validity"] is None
        assert result.quality["rows_scored"] > 0  # it searched, and found nothing allowed


def test_a_favourable_decision_needs_no_counterfactual(demo_gbm):
    frame = credit.applicants(200, seed=9)[credit.FEATURES]
    good = plain(frame[demo_gbm.model.predict(frame) == "good"].head(1))[0]
    result = demo_gbm.search.explain(good, seed=0)
    assert result.counterfactuals == []
    assert result.original["favourable"] is True
    assert "already favourable" in result.note


def test_a_threshold_goal_flips_the_score_past_the_threshold(demo_gbm):
    search = cf.search_for(demo_gbm.context, threshold=0.3)
    assert search.goal.document() == {"score": "<", "threshold": 0.3}
    for n, instance in enumerate(demo_gbm.instances[:3]):
        result = search.explain(instance, seed=n)
        assert result.ok, result.error
        assert result.counterfactuals
        _, scores = independent_scores(demo_gbm, [c.inputs for c in result.counterfactuals])
        assert (scores < 0.3).all()
        for counterfactual in result.counterfactuals:
            check_rules(demo_gbm.schema, instance, counterfactual)


def test_a_bad_row_is_an_error_in_the_result_not_an_exception(demo_gbm):
    row = dict(demo_gbm.instances[0], income="a lot")
    result = demo_gbm.search.explain(row, seed=0)
    assert not result.ok
    assert "income" in result.error


# -- the invariants, over random schemas and instances --------------------------------------
NUMERIC_NAMES = ["a", "b", "c", "d"]


@st.composite
def schemas_and_instances(draw):
    features = []
    for name in NUMERIC_NAMES:
        kind = draw(st.sampled_from(["numeric", "integer"]))
        low = draw(st.integers(-50, 0))
        high = low + draw(st.integers(5, 100))
        spec = {"name": name, "type": kind, "min": low, "max": high}
        protected = draw(st.booleans())
        if protected:
            spec["protected"] = True
        elif draw(st.booleans()):
            spec["immutable"] = True
        else:
            direction = draw(st.sampled_from([None, "increase", "decrease"]))
            if direction:
                spec["direction"] = direction
            step = draw(st.sampled_from([None, 1, 2, 5] if kind == "integer" else [None, 0.5, 3]))
            if step:
                spec["step"] = step
        features.append(spec)
    features.append(
        {
            "name": "colour",
            "type": "categorical",
            "categories": ["red", "green", "blue"],
            "immutable": draw(st.booleans()),
        }
    )
    features.append({"name": "flag", "type": "boolean", "protected": draw(st.booleans())})
    spec = {
        "features": features,
        "target": {
            "type": "classification",
            "classes": ["no", "yes"],
            "positive_class": "no",
            "favourable": "yes",
        },
    }
    instance = {}
    for feature in features[: len(NUMERIC_NAMES)]:
        value = draw(st.integers(feature["min"], feature["max"]))
        instance[feature["name"]] = value if feature["type"] == "integer" else float(value)
    instance["colour"] = draw(st.sampled_from(["red", "green", "blue"]))
    instance["flag"] = draw(st.booleans())
    weights = draw(st.lists(st.floats(-1, 1), min_size=6, max_size=6))
    return spec, instance, weights


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=schemas_and_instances(), seed=st.integers(0, 2**16))
def test_immutables_directions_bounds_and_steps_hold_for_random_schemas(case, seed):
    spec, instance, weights = case
    schema = parse_schema(spec)
    colours = {"red": weights[4], "green": -weights[4], "blue": 0.0}

    def score(frame: pd.DataFrame) -> np.ndarray:
        linear = sum(
            w * frame[n].astype(float) / 50 for w, n in zip(weights, NUMERIC_NAMES, strict=False)
        )
        linear = linear + frame["colour"].map(colours).astype(float)
        linear = linear + weights[5] * frame["flag"].astype(float)
        return np.asarray(1 / (1 + np.exp(-4 * linear)))

    def labels(frame: pd.DataFrame) -> np.ndarray:
        return np.where(score(frame) >= 0.5, "yes", "no")

    rng = np.random.default_rng(seed)
    background = pd.DataFrame(
        {
            **{
                f["name"]: (
                    rng.integers(f["min"], f["max"] + 1, 60)
                    if f["type"] == "integer"
                    else rng.uniform(f["min"], f["max"], 60)
                )
                for f in spec["features"][: len(NUMERIC_NAMES)]
            },
            "colour": rng.choice(["red", "green", "blue"], 60),
            "flag": rng.random(60) < 0.5,
        }
    )
    search = cf.CounterfactualSearch(
        schema, background, cf.Predictor(labels, score), cf.goal_for(schema)
    )
    result = search.explain(instance, seed=seed)
    assert result.ok, result.error
    if result.original["favourable"]:
        assert result.counterfactuals == []
        return
    for counterfactual in result.counterfactuals:
        check_rules(schema, instance, counterfactual)
        frame = schema.frame([counterfactual.inputs])
        assert labels(frame)[0] == "yes"
    assert search.explain(instance, seed=seed).document() == result.document()


def test_a_regression_flips_below_its_threshold():
    """A regression's value past the threshold: favourable below it (higher is adverse)."""
    from sklearn.linear_model import Ridge

    spec = credit_actionable()
    spec["target"] = {"type": "regression"}
    frame = credit.applicants(1500, seed=4)
    model = one_hot(credit.CATEGORICAL, Ridge()).fit(
        frame[credit.FEATURES].iloc[:1000], frame["true_probability"].iloc[:1000]
    )
    schema = parse_schema(spec)
    background = frame[credit.FEATURES].iloc[1000:1300].reset_index(drop=True)
    context = ModelContext(model, schema, background, "b" * 64, "a" * 64)
    with pytest.raises(ValueError, match="threshold"):
        cf.search_for(context)
    search = cf.search_for(context, threshold=0.4)
    rest = frame[credit.FEATURES].iloc[1300:]
    high = plain(rest[model.predict(rest) >= 0.4].head(3))
    assert high
    for n, instance in enumerate(high):
        result = search.explain(instance, seed=n)
        assert result.ok, result.error
        assert result.counterfactuals
        values = model.predict(schema.frame([c.inputs for c in result.counterfactuals]))
        assert (values < 0.4).all()
        for counterfactual, value in zip(result.counterfactuals, values, strict=True):
            assert counterfactual.score == pytest.approx(float(value), abs=1e-12)
            check_rules(schema, instance, counterfactual)
