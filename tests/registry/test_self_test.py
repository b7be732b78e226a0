"""The registration self-test: a version whose SHAP explanations do not add up to its own
outputs is refused, or explained model-agnostically when its owner accepts that.

The failing model is real, not contrived: shap's TreeExplainer reads scikit-learn's
HistGradientBoosting categorical splits as numeric thresholds, so its values do not
add up to the model's own decision_function (German credit data).
"""

from __future__ import annotations

import io
import json

import joblib
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from auditapp.accounts import roles
from auditapp.decisions.services import record_decisions
from auditapp.registry.models import ModelVersion
from auditapp.registry.services import load_model
from explain import batches
from explain.models import Explanation
from tests.datasets import GERMAN_CATEGORICAL, GERMAN_NUMERIC, german_credit, german_schema
from tests.factories import upload_form

# Explainer numbers on real models: the same on any database (tests/conftest.py).
pytestmark = pytest.mark.database_neutral

FEATURES = GERMAN_CATEGORICAL + GERMAN_NUMERIC
URL = "/api/v1/models"


@pytest.fixture(scope="module")
def categorical_hgb() -> bytes:
    frame = german_credit()
    prep = ColumnTransformer(
        [("categorical", OrdinalEncoder(), GERMAN_CATEGORICAL)], remainder="passthrough"
    )
    model = HistGradientBoostingClassifier(
        max_iter=20, categorical_features=list(range(len(GERMAN_CATEGORICAL))), random_state=0
    )
    pipeline = Pipeline([("prep", prep), ("model", model)])
    pipeline.fit(frame[FEATURES].iloc[:700], frame["credit"].iloc[:700])
    buffer = io.BytesIO()  # joblib: the registry does not trust HGB's TreePredictor in skops
    joblib.dump(pipeline, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def german_background() -> bytes:
    return german_credit()[FEATURES].iloc[700:800].to_csv(index=False).encode()


def upload(client, artifact, background, **fields):
    form = {
        "name": "german-hgb",
        "version": "1",
        "artifact": _file(artifact, "model.joblib"),
        "artifact_format": "joblib",
        "schema": json.dumps(german_schema()),
        "background": _file(background, "background.csv"),
        **fields,
    }
    return client.post(URL, form, format="multipart")


def _file(data: bytes, name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def test_a_version_records_its_self_test_figures(model_version):
    figures = model_version.self_test["shap"]
    assert figures["passed"] is True and figures["cause"] == ""
    assert figures["explainer"] == "TreeExplainer"
    assert figures["output_space"] == "log_odds"
    assert figures["rows"] == 50 and figures["seed"] == 0  # of the 60 background rows
    assert figures["failed_rows"] == 0
    assert figures["max_additivity_error"] < 1e-9


@pytest.mark.django_db
def test_a_version_whose_explanations_do_not_add_up_is_refused_naming_the_cause(
    api_client, ml_engineer, categorical_hgb, german_background
):
    response = upload(api_client(ml_engineer), categorical_hgb, german_background)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "explanations_do_not_add_up", error
    assert "TreeExplainer on HistGradientBoostingClassifier" in error["message"]
    assert "log_odds" in error["message"]
    assert error["details"]["passed"] is False
    assert error["details"]["failed_rows"] > 0
    assert error["details"]["max_additivity_error"] > 0.01
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_allow_approximate_registers_it_explained_by_the_model_agnostic_explainer(
    api_client, ml_engineer, categorical_hgb, german_background
):
    response = upload(
        api_client(ml_engineer),
        categorical_hgb,
        german_background,
        explain=json.dumps({"allow_approximate": True, "lime": "on_demand"}),
    )
    assert response.status_code == 201, response.content
    version = ModelVersion.objects.get()
    figures = version.self_test["shap"]
    assert figures["passed"] is False and figures["approximate"]["passed"] is True
    assert figures["approximate"]["explainer"] == "PermutationExplainer"
    assert version.explain_settings["allow_approximate"] is True

    rows = german_credit()[FEATURES].iloc[800:803].to_dict(orient="records")
    results = record_decisions(
        roles.Actor(user=ml_engineer),
        {
            "decisions": [
                {
                    "model": "german-hgb",
                    "version": "1",
                    "request_id": f"r{i}",
                    "inputs": {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()},
                    "prediction": "good",
                    "predicted_at": "2026-01-05T10:00:00Z",
                }
                for i, row in enumerate(rows)
            ]
        },
    )
    ids = [r["id"] for r in results]
    batches.run_batch(version.pk, "shap", ids)
    stored = Explanation.objects.filter(decision_id__in=ids, method="shap")
    assert {e.explainer for e in stored} == {"PermutationExplainer"}
    assert all(e.quality["additivity_ok"] for e in stored)
    assert all(
        e.config["why_model_agnostic"] == "the exact explainer failed the self-test" for e in stored
    )
    # The permutation values add up to the model's own probability of "bad".
    model = load_model(version)
    frame = version.parsed_schema.frame([e.decision.full_inputs() for e in stored])
    probabilities = model.predict_proba(frame)[:, list(model.classes_).index("bad")]
    totals = [e.base_value + sum(e.attributions.values()) for e in stored]
    np.testing.assert_allclose(totals, probabilities, atol=1e-6)


def test_the_version_page_and_api_show_the_self_test(model_version, compliance_officer, api_client):
    client = Client()
    client.force_login(compliance_officer)
    page = client.get("/models/credit/versions/1/").content.decode()
    figures = model_version.self_test["shap"]
    assert "Explanation self-test" in page
    assert "50 background rows (seed 0) were explained with TreeExplainer" in page
    assert "every row adds up" in page
    assert "Approximate explanations" not in page

    body = api_client(compliance_officer).get("/api/v1/models/credit/versions/1").json()
    assert body["self_test"]["shap"] == figures
    assert body["explain"]["allow_approximate"] is False


@pytest.mark.django_db
def test_an_approximately_explained_version_is_warned_about_on_its_pages(
    api_client, ml_engineer, admin, categorical_hgb, german_background
):
    response = upload(
        api_client(ml_engineer),
        categorical_hgb,
        german_background,
        explain=json.dumps({"allow_approximate": True}),
    )
    assert response.status_code == 201, response.content
    client = Client()
    client.force_login(admin)
    page = client.get("/models/german-hgb/versions/1/").content.decode()
    assert "Approximate explanations" in page
    assert "rows do not add up" in page and "PermutationExplainer" in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("explain", "message"),
    [
        ({"allow_approximate": "yes"}, "explain.allow_approximate must be true or false."),
        ({"score_tolerance": "0.1"}, "explain.score_tolerance must be a number."),
        ({"score_tolerance": 1.5}, "explain.score_tolerance must be in [0, 1)."),
    ],
)
def test_bad_explain_settings_are_refused_naming_the_key(
    api_client, ml_engineer, skops_artifact, background_csv, explain, message
):
    form = upload_form(skops_artifact, background=background_csv, explain=json.dumps(explain))
    response = api_client(ml_engineer).post(URL, form, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_explain",
        "message": message,
        "details": None,
    }
    assert not ModelVersion.objects.exists()
