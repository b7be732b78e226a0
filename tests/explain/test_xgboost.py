"""An XGBoost model through the whole path: a skops artifact accepted by the registry's
trusted-type list, decisions recorded, a SHAP batch run as a worker runs it, and the
stored attributions equal to an independent shap computation (German credit data)."""

from __future__ import annotations

import numpy as np
import pytest
import shap
import skops.io
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from xgboost import XGBClassifier

from auditapp.registry.artifacts import trusted_skops_types
from auditapp.registry.services import load_model
from explain import batches
from explain.models import Explanation
from tests.datasets import GERMAN_CATEGORICAL, GERMAN_NUMERIC, german_credit, german_schema

FEATURES = GERMAN_CATEGORICAL + GERMAN_NUMERIC


@pytest.fixture(scope="module")
def german():
    frame = german_credit()
    return frame.iloc[:700], frame.iloc[700:800], frame.iloc[800:860]  # train, background, rows


@pytest.fixture(scope="module")
def xgb_pipeline(german) -> Pipeline:
    train, _, _ = german
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("categorical", OneHotEncoder(handle_unknown="ignore"), GERMAN_CATEGORICAL)],
                    remainder="passthrough",
                ),
            ),
            ("model", XGBClassifier(n_estimators=40, max_depth=4, n_jobs=1, random_state=0)),
        ]
    )
    return pipeline.fit(train[FEATURES], (train["credit"] == "bad").astype(int))


@pytest.fixture
def xgb_version(register, ml_engineer, german, xgb_pipeline):
    _, background, _ = german
    schema = german_schema()
    # XGBoost learns integer classes: 1 is "bad", the positive (adverse) class.
    schema["target"] = {"type": "classification", "classes": [0, 1], "positive_class": 1}
    return register(
        ml_engineer,
        name="german-xgb",
        artifact=skops.io.dumps(xgb_pipeline),
        schema=schema,
        background=background[FEATURES].to_csv(index=False).encode(),
    )


def payloads(frame, model) -> list[dict]:
    scores = model.predict_proba(frame[FEATURES])[:, 1]
    return [
        {
            "model": "german-xgb",
            "version": "1",
            "request_id": f"german-{i}",
            "inputs": {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()},
            "prediction": int(score >= 0.5),
            "score": round(float(score), 6),
            "predicted_at": "2026-01-05T10:00:00Z",
        }
        for i, (row, score) in enumerate(
            zip(frame[FEATURES].to_dict(orient="records"), scores, strict=True)
        )
    ]


def test_the_registry_loads_an_xgboost_skops_artifact_with_its_trusted_types(xgb_pipeline):
    data = skops.io.dumps(xgb_pipeline)
    assert "xgboost.sklearn.XGBClassifier" in trusted_skops_types(data)
    assert "xgboost.core.Booster" in trusted_skops_types(data)


def test_an_xgboost_batch_stores_attributions_equal_to_independent_shap(
    xgb_version, german, ingest
):
    _, _, rows = german
    model = load_model(xgb_version)  # what the worker loads: the registered skops file
    results = ingest(*payloads(rows, model))
    ids = [r["id"] for r in results]

    outcome = batches.run_batch(xgb_version.pk, "shap", ids)

    assert outcome == {"explained": len(rows), "failed": 0}
    stored = list(
        Explanation.objects.filter(method="shap", decision_id__in=ids).order_by("decision")
    )
    prep, estimator = model[:-1], model[-1]
    transformed = prep.transform(rows[FEATURES])
    reference = np.asarray(shap.TreeExplainer(estimator).shap_values(transformed), dtype=float)
    sources = prep.get_feature_names_out()
    for row, explanation in enumerate(stored):
        assert explanation.status == Explanation.DONE
        assert explanation.explainer == "TreeExplainer"
        assert explanation.output_space == "log_odds"
        assert explanation.quality["additivity_ok"] is True
        for feature in FEATURES:
            prefix = f"categorical__{feature}_" if feature in GERMAN_CATEGORICAL else None
            columns = [
                j
                for j, name in enumerate(sources)
                if (prefix and name.startswith(prefix)) or name == f"remainder__{feature}"
            ]
            expected = reference[row, columns].sum()
            assert explanation.attributions[feature] == pytest.approx(expected, abs=1e-9)
        margin = model.predict(rows[FEATURES].iloc[[row]], output_margin=True)[0]
        total = explanation.base_value + sum(explanation.attributions.values())
        assert total == pytest.approx(float(margin), abs=1e-5)  # float32 inside XGBoost
