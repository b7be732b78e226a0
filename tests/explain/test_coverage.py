"""Which models the SHAP engine explains correctly, proved against independent references.

For every model family of coverage_models (trees from scikit-learn, XGBoost and
LightGBM, LightGBM on native categoricals, linear models, a regressor, an MLP),
trained on the committed German credit or Adult data, the engine's attributions
per raw feature are compared with:

1. shap run directly on the pipeline's transformed rows, passed as the pipeline
   makes them (a scipy sparse matrix stays sparse), for trees; the closed form
   of interventional linear SHAP over the whole background for linear models;
   shap's PermutationExplainer with the engine's recorded background, budget and
   seeds for the model-agnostic case. Transformed columns are summed back onto
   raw features here, from the fitted transformers (OneHotEncoder.categories_),
   not with the engine's helpers.
2. the library's own contributions (XGBoost pred_contribs, LightGBM pred_contrib).
3. the decision itself: base value + sum of attributions is the pipeline's own
   output on the raw row, in the explanation's output space.

The largest difference per family and reference is collected in DIFFERENCES and
printed as a table when the module ends (run pytest with -s to see it).
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import shap
import xgboost
from sklearn.preprocessing import OneHotEncoder

from explain import engine
from explain.backends import backend
from explain.shap_backend import SINGLE_PRECISION_TOLERANCE
from tests.explain.coverage_models import (
    BY_ID,
    FAMILIES,
    Family,
    background_of,
    data,
    numpy_rows,
    rows_of,
    shifted_gradient_boosting,
    trained,
)

EXACT = 1e-9  # float64 arithmetic, exact algorithms
MARGIN_SPACES = ("log_odds", "decision_function")
LINEAR = [f.id for f in FAMILIES if f.reference == "linear"]
LIBRARY = [f.id for f in FAMILIES if f.library]
SPARSE = [f.id for f in FAMILIES if f.sparse]
NATIVE_CATEGORICAL = ["lightgbm_ordinal_categorical", "lightgbm_pandas_categorical"]
ALL = [f.id for f in FAMILIES]

# shap warns, on every direct LightGBM call, that its binary output "has changed".
pytestmark = pytest.mark.filterwarnings("ignore:LightGBM binary classifier:UserWarning")

# (family, reference) -> what was compared and the largest |difference| seen.
DIFFERENCES: dict[tuple[str, str], dict] = {}


@pytest.fixture(scope="module", autouse=True)
def difference_table():
    yield
    print(format_table())


def format_table() -> str:
    header = (
        "model family",
        "explainer",
        "output space",
        "reference",
        "tolerance",
        "max |difference|",
        "",
    )
    lines = [header]
    for (family_id, reference), entry in sorted(
        DIFFERENCES.items(), key=lambda kv: (ALL.index(kv[0][0]), kv[0][1])
    ):
        family = BY_ID[family_id]
        lines.append(
            (
                family_id,
                family.explainer,
                family.output_space,
                reference,
                entry["tolerance"],
                f"{entry['difference']:.3g}",
                "ok" if entry["ok"] else "FAILS",
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    rendered = [
        " | ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    rendered.insert(1, "-+-".join("-" * width for width in widths))
    return "\n\nExplanation coverage (max |difference| per family and reference)\n" + "\n".join(
        rendered
    )


def record(family: Family, reference: str, difference: float, tolerance: str, ok: bool) -> None:
    DIFFERENCES[(family.id, reference)] = {
        "difference": float(difference),
        "tolerance": tolerance,
        "ok": bool(ok),
    }


def check_close(family, reference, actual, expected, tolerance, relative=False, table=True):
    """|actual - expected| <= tolerance (x max(1, |expected|) when relative), recorded
    in the table unless `table` is false (the checks that are meant to fail)."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, (reference, actual.shape, expected.shape)
    difference = np.abs(actual - expected)
    allowed = tolerance * np.maximum(1.0, np.abs(expected)) if relative else tolerance
    ok = bool(np.all(difference <= allowed))
    label = f"{tolerance:g}" + (" rel." if relative else "")
    if table:
        record(family, reference, difference.max(), label, ok)
    assert ok, (
        f"{family.id}: {reference} differs by up to {difference.max():.3g} (allowed {label}); "
        f"worst row {int(np.unravel_index(difference.argmax(), difference.shape)[0])}"
    )


# -- what the engine says ------------------------------------------------------------------------


def context_for(family: Family, model=None) -> engine.ModelContext:
    d = data(family.data)
    background = background_of(family)
    return engine.ModelContext(
        model=model if model is not None else trained(family.id),
        schema=d.schema,
        background=d.schema.frame(background.to_dict(orient="records")),
        background_sha256="x",
        artifact_sha256="y",
    )


def run_engine(family: Family, model=None) -> list[engine.ExplanationResult]:
    rows = rows_of(family)
    return engine.explain(context_for(family, model), backend("shap"), rows, seeds=[0] * len(rows))


@cache
def explained(family_id: str) -> list[engine.ExplanationResult]:
    """The engine's explanations of a family's rows (computed once per module run)."""
    return run_engine(BY_ID[family_id])


def successful(family: Family) -> list[engine.ExplanationResult]:
    results = explained(family.id)
    assert len(results) == family.rows
    failed = [r.error for r in results if not r.ok]
    assert not failed, f"{family.id}: {len(failed)} rows failed, first: {failed[0]}"
    return results


def attribution_matrix(family: Family, results) -> np.ndarray:
    names = data(family.data).schema.names
    return np.array([[r.attributions[name] for name in names] for r in results])


def raw_frame(family: Family) -> pd.DataFrame:
    """The explained rows as a model receives them (Schema.frame of the raw dicts)."""
    return data(family.data).schema.frame(rows_of(family))


# -- independent references ------------------------------------------------------------------------


def positive_column(family: Family, estimator) -> int:
    positive = data(family.data).schema.target.positive_class
    return [str(c) for c in estimator.classes_].index(str(positive))


def margin_sign(family: Family, estimator) -> float:
    """Binary margins are for classes_[1]: -1 when the schema's positive class is classes_[0]."""
    if family.output_space in MARGIN_SPACES and positive_column(family, estimator) == 0:
        return -1.0
    return 1.0


def raw_feature_matrix(family: Family, pipeline) -> np.ndarray:
    """0/1 (transformed columns x raw features), built from the fitted transformers.

    A OneHotEncoder's block for feature j has len(categories_[j]) columns; every
    other transformer here (passthrough, StandardScaler, OrdinalEncoder, the
    category cast) makes one column per input column.
    """
    names = data(family.data).schema.names
    prep = pipeline[:-1][-1]  # the ColumnTransformer
    width = max(s.stop for s in prep.output_indices_.values())
    matrix = np.zeros((width, len(names)))
    for name, fitted, columns in prep.transformers_:
        block = prep.output_indices_[name]
        if block.stop == block.start:
            continue
        if isinstance(fitted, OneHotEncoder):
            sizes = [len(categories) for categories in fitted.categories_]
        else:
            sizes = [1] * len(columns)
        assert sum(sizes) == block.stop - block.start, name
        start = block.start
        for column, size in zip(columns, sizes, strict=True):
            matrix[start : start + size, names.index(column)] = 1.0
            start += size
    assert (matrix.sum(axis=1) == 1).all()  # every transformed column has one source
    return matrix


def transformed(family: Family, pipeline, frame: pd.DataFrame):
    """The preprocessing's output, as the estimator receives it (sparse stays sparse)."""
    out = pipeline[:-1].transform(frame)
    assert scipy.sparse.issparse(out) == family.sparse
    return out


def tree_reference(family: Family, pipeline, frame: pd.DataFrame):
    """shap.TreeExplainer on the estimator, fed the transformed rows natively."""
    estimator = pipeline[-1]
    native = transformed(family, pipeline, frame)
    if scipy.sparse.issparse(native) and family.library is None:
        # shap's own TreeSHAP (scikit-learn trees) cannot read scipy sparse input;
        # scikit-learn's trees read an absent entry as 0.0, so the dense matrix
        # is the same input to them (checked on the predictions).
        assert np.array_equal(estimator.predict(native), estimator.predict(native.toarray()))
        native = native.toarray()
    explainer = shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent")
    values = numpy_rows(explainer.shap_values(native))  # LightGBM: sparse in, sparse out
    base = np.asarray(explainer.expected_value, dtype=float).reshape(-1)
    if values.ndim == 3:  # one output per class (scikit-learn forests' probabilities)
        column = positive_column(family, estimator)
        values, base_value = values[:, :, column], base[column]
    else:
        base_value = base[0]
    sign = margin_sign(family, estimator)
    return sign * values @ raw_feature_matrix(family, pipeline), sign * base_value


def linear_reference(family: Family, pipeline, frame: pd.DataFrame):
    """Interventional linear SHAP in closed form: coef_j * (x_j - mean of ALL background rows)."""
    estimator = pipeline[-1]
    background = background_of(family)
    columns = numpy_rows(pipeline[:-1].transform(background))
    x = numpy_rows(pipeline[:-1].transform(frame))
    coef = np.asarray(estimator.coef_, dtype=float).reshape(-1)
    mean = columns.mean(axis=0)
    values = (x - mean) * coef
    base_value = float(np.asarray(estimator.intercept_).reshape(-1)[0] + coef @ mean)
    sign = margin_sign(family, estimator)
    return sign * values @ raw_feature_matrix(family, pipeline), sign * base_value


class Codes:
    """Raw rows as numbers for permutation SHAP: a category is its index in the schema."""

    def __init__(self, family: Family):
        self.schema = data(family.data).schema

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        columns = []
        for feature in self.schema.features:
            if feature.type == "categorical":
                index = {c: k for k, c in enumerate(feature.categories)}
                columns.append([float(index[v]) for v in frame[feature.name]])
            else:
                columns.append(frame[feature.name].astype(float).tolist())
        return np.array(columns, dtype=float).T

    def decode(self, array: np.ndarray) -> pd.DataFrame:
        columns = {}
        for j, feature in enumerate(self.schema.features):
            if feature.type == "categorical":
                categories = np.array(feature.categories, dtype=object)
                columns[feature.name] = pd.Series(
                    categories[array[:, j].round().astype(int)], dtype=object
                )
            else:
                columns[feature.name] = pd.Series(array[:, j], dtype="float64")
        return pd.DataFrame(columns)


def permutation_reference(family: Family, pipeline, frame: pd.DataFrame, results):
    """shap.PermutationExplainer on the whole pipeline, with the engine's recorded settings."""
    config = results[0].config
    background = background_of(family)
    assert config["background_rows"] == len(background)  # the summary is the whole sample
    codes = Codes(family)
    positive = positive_column(family, pipeline[-1])

    def probability(array: np.ndarray) -> np.ndarray:
        return pipeline.predict_proba(codes.decode(array))[:, positive]

    background_codes = codes.encode(background)
    explainer = shap.PermutationExplainer(
        probability, shap.maskers.Independent(background_codes, max_samples=len(background_codes))
    )
    values, bases = [], []
    for row, result in zip(codes.encode(frame), results, strict=True):
        np.random.seed(result.seed)  # shap draws its permutations from NumPy's global generator
        explanation = explainer(row.reshape(1, -1), max_evals=config["max_evals"], silent=True)
        values.append(explanation.values[0])
        bases.append(float(np.asarray(explanation.base_values).reshape(-1)[0]))
    return np.array(values), np.array(bases)


def own_output(family: Family, pipeline, frame: pd.DataFrame) -> np.ndarray:
    """The pipeline's own output on the raw rows, in the family's output space."""
    estimator = pipeline[-1]
    module = type(estimator).__module__.split(".")[0]
    if family.output_space == "raw":
        return np.asarray(pipeline.predict(frame), dtype=float)
    if family.output_space == "probability":
        return pipeline.predict_proba(frame)[:, positive_column(family, estimator)]
    if module == "xgboost":
        margin = pipeline.predict(frame, output_margin=True)
    elif module == "lightgbm":
        margin = pipeline.predict(frame, raw_score=True)
    else:
        margin = pipeline.decision_function(frame)
    return margin_sign(family, estimator) * np.asarray(margin, dtype=float)


def additivity_tolerance(family: Family) -> float:
    return SINGLE_PRECISION_TOLERANCE if family.single_precision else EXACT


# -- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("family_id", ALL)
def test_the_engine_picks_the_explainer_and_output_space(family_id):
    family = BY_ID[family_id]
    results = successful(family)
    assert {r.explainer for r in results} == {family.explainer}
    assert {r.output_space for r in results} == {family.output_space}
    assert all(set(r.attributions) == set(data(family.data).schema.names) for r in results)


@pytest.mark.parametrize("family_id", ALL)
def test_attributions_equal_an_independent_reference(family_id):
    family = BY_ID[family_id]
    pipeline = trained(family_id)
    frame = raw_frame(family)
    results = successful(family)
    ours = attribution_matrix(family, results)
    bases = np.array([r.base_value for r in results])
    if family.reference == "tree":
        expected, base = tree_reference(family, pipeline, frame)
        expected_bases = np.full(len(results), base)
        name = "shap TreeExplainer (native input)"
    elif family.reference == "linear":
        expected, base = linear_reference(family, pipeline, frame)
        expected_bases = np.full(len(results), base)
        name = "closed-form linear SHAP (all background rows)"
    else:
        expected, expected_bases = permutation_reference(family, pipeline, frame, results)
        name = "shap PermutationExplainer (same background, seeds)"
    check_close(family, name, ours, expected, EXACT)
    check_close(family, f"{name}: base value", bases, expected_bases, EXACT)


@pytest.mark.parametrize("family_id", LIBRARY)
def test_attributions_equal_the_librarys_own_contributions(family_id):
    family = BY_ID[family_id]
    pipeline = trained(family_id)
    estimator = pipeline[-1]
    results = successful(family)
    native = transformed(family, pipeline, raw_frame(family))
    if family.library == "xgboost":
        name = "XGBoost pred_contribs"
        contributions = estimator.get_booster().predict(xgboost.DMatrix(native), pred_contribs=True)
        assert contributions.dtype == np.float32
    else:
        name = "LightGBM pred_contrib"
        contributions = estimator.predict(native, pred_contrib=True)
        # LightGBM answers a scipy sparse input with a scipy sparse matrix.
        assert scipy.sparse.issparse(contributions) == family.sparse
    contributions = numpy_rows(contributions)
    sign = margin_sign(family, estimator)
    expected = sign * contributions[:, :-1] @ raw_feature_matrix(family, pipeline)
    bias = sign * contributions[:, -1]
    # shap's TreeExplainer (tree_path_dependent) hands these libraries' own values
    # through, float32 ones included: then the engine must give them back exactly,
    # summed in float64. Were it to recompute them, float32 values would be held
    # to the engine's documented single-precision tolerance instead.
    through = np.array_equal(
        numpy_rows(
            shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent").shap_values(
                native, check_additivity=False
            )
        ),
        contributions[:, :-1],
    )
    loose = family.single_precision and not through
    tolerance = SINGLE_PRECISION_TOLERANCE if loose else EXACT
    ours = attribution_matrix(family, results)
    check_close(family, name, ours, expected, tolerance, relative=loose)
    bases = [r.base_value for r in results]
    check_close(family, f"{name}: bias", bases, bias, tolerance, relative=loose)


@pytest.mark.parametrize("family_id", ALL)
def test_base_value_plus_attributions_is_the_pipelines_own_output(family_id):
    family = BY_ID[family_id]
    results = successful(family)
    output = own_output(family, trained(family_id), raw_frame(family))
    totals = np.array([r.base_value + sum(r.attributions.values()) for r in results])
    tolerance = additivity_tolerance(family)
    relative = family.single_precision
    check_close(family, "pipeline's own output", totals, output, tolerance, relative)
    reported = np.array([r.quality["model_output"] for r in results])
    check_close(family, "quality.model_output", reported, output, tolerance, relative)
    errors = np.array([r.quality["additivity_error"] for r in results])
    assert np.abs(errors - np.abs(totals - reported)).max() < EXACT
    assert all(r.quality["additivity_ok"] is True for r in results)


@pytest.mark.parametrize("family_id", ALL)
def test_explaining_the_same_rows_again_gives_identical_numbers(family_id):
    family = BY_ID[family_id]
    first = successful(family)
    again = run_engine(family)
    assert [r.attributions for r in again] == [r.attributions for r in first]
    assert [r.base_value for r in again] == [r.base_value for r in first]
    assert [r.top_features for r in again] == [r.top_features for r in first]
    assert [r.quality for r in again] == [r.quality for r in first]


@pytest.mark.parametrize("family_id", SPARSE)
def test_the_sparse_pipelines_really_give_their_estimator_a_sparse_matrix(family_id):
    family = BY_ID[family_id]
    d = data(family.data)
    pipeline = trained(family_id)
    for frame in (d.train, raw_frame(family)):
        matrix = pipeline[:-1].transform(frame)
        assert scipy.sparse.issparse(matrix)
        # Zeros of numeric columns (capital-gain, capital-loss) are absent entries:
        # fewer stored values than one per categorical and numeric feature.
        assert matrix.nnz < matrix.shape[0] * len(d.features)


def test_a_densified_sparse_xgboost_explanation_would_not_add_up_to_the_decision():
    """The issue's defect, reproduced: shows that the checks above can fail.

    XGBoost reads an absent sparse entry as missing and a stored 0.0 as the value
    0: on the densified matrix it computes another function, which explains and
    checks itself consistently, but not the decision the pipeline made.
    """
    family = BY_ID["xgboost_sparse_adult"]
    pipeline = trained(family.id)
    estimator = pipeline[-1]
    frame = raw_frame(family)
    native = transformed(family, pipeline, frame)
    margin = own_output(family, pipeline, frame)
    explainer = shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent")

    densified = explainer.shap_values(native.toarray(), check_additivity=False).astype(float)
    dense_totals = float(explainer.expected_value) + densified.sum(axis=1)
    sparse_values = explainer.shap_values(native, check_additivity=False).astype(float)
    sparse_totals = float(explainer.expected_value) + sparse_values.sum(axis=1)

    # Consistent with itself: the densified input's own margin ...
    dense_margin = estimator.predict(native.toarray(), output_margin=True)
    assert np.allclose(dense_totals, dense_margin, rtol=0, atol=SINGLE_PRECISION_TOLERANCE)
    # ... but not with the decision, which the native explanation matches.
    assert np.abs(dense_totals - margin).max() > 1.0
    assert np.allclose(sparse_totals, margin, rtol=0, atol=SINGLE_PRECISION_TOLERANCE)
    with pytest.raises(AssertionError, match="differs by up to"):
        check_close(
            family,
            "densified input (expected to fail)",
            dense_totals,
            margin,
            SINGLE_PRECISION_TOLERANCE,
            relative=True,
            table=False,
        )
    raw = np.asarray(densified) @ raw_feature_matrix(family, pipeline)
    with pytest.raises(AssertionError, match="differs by up to"):
        check_close(
            family,
            "shap on the densified input (expected to fail)",
            raw,
            sparse_values @ raw_feature_matrix(family, pipeline),
            EXACT,
            table=False,
        )


def test_an_explanation_that_does_not_add_up_to_the_decision_is_reported_not_ok():
    """Trees whose model's decisions are shifted by 0.5: TreeSHAP explains the trees."""
    family = BY_ID["gradient_boosting"]
    model = shifted_gradient_boosting()
    shift = type(model[-1]).SHIFT

    results = run_engine(family, model)

    assert all(r.ok for r in results), results[0].error
    output = own_output(family, model, raw_frame(family))  # the shifted decisions
    reported = np.array([r.quality["model_output"] for r in results])
    assert np.abs(reported - output).max() < EXACT
    assert [r.quality["additivity_ok"] for r in results] == [False] * len(results)
    errors = np.array([r.quality["additivity_error"] for r in results])
    assert np.abs(errors - shift).max() < EXACT


@pytest.mark.parametrize("family_id", LINEAR)
def test_the_linear_explainer_uses_and_records_the_whole_background(family_id):
    family = BY_ID[family_id]
    results = successful(family)
    config = results[0].config
    assert len(background_of(family)) > 100  # more than shap's default masker keeps
    assert config["background_rows"] == len(background_of(family))
    assert config["masker"] == "Independent"
    assert re.fullmatch(r"[0-9a-f]{64}", config["background_rows_sha256"])
    assert all(r.config == config for r in results)


def categorical_splits(booster) -> list[int]:
    """The features of a LightGBM model's categorical (==) splits."""
    features = []

    def walk(node: dict) -> None:
        if "split_feature" not in node:
            return
        if node["decision_type"] == "==":
            features.append(node["split_feature"])
        walk(node["left_child"])
        walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return features


@pytest.mark.parametrize("family_id", NATIVE_CATEGORICAL)
def test_lightgbm_really_splits_on_native_categories(family_id):
    family = BY_ID[family_id]
    pipeline = trained(family_id)
    d = data(family.data)
    splits = categorical_splits(pipeline[-1].booster_)
    assert len(splits) >= 10
    assert set(splits) <= set(range(len(d.categorical)))  # only on the categorical columns
    if family_id == "lightgbm_pandas_categorical":
        out = pipeline[:-1].transform(raw_frame(family))
        assert isinstance(out, pd.DataFrame)
        assert all(isinstance(out[name].dtype, pd.CategoricalDtype) for name in d.categorical)
