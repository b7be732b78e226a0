"""POST /api/v1/models: a model version is checked against its schema and background first."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random

import pytest
import skops.io
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.registry.models import ModelVersion, RegisteredModel, StageChange
from tests.factories import credit_schema, upload_form

URL = "/api/v1/models"


@pytest.fixture
def engineer_client(api_client, ml_engineer):
    return api_client(ml_engineer)


@pytest.fixture
def post_upload(engineer_client, skops_artifact, background_csv):
    """POST a credit upload, valid unless told otherwise."""

    def post(artifact: bytes | None = None, **overrides):
        overrides.setdefault("background", background_csv)
        form = upload_form(skops_artifact if artifact is None else artifact, **overrides)
        return engineer_client.post(URL, form, format="multipart")

    return post


def nothing_registered() -> bool:
    return not ModelVersion.objects.exists() and not RegisteredModel.objects.exists()


class TestRegistering:
    CARD = {
        "description": "Default risk of consumer loans.",
        "intended_use": "Pre-screening.",
        "limitations": "Synthetic data.",
        "training_data": "300 applicants.",
        "metrics": {"auc": 0.8},
    }

    def test_it_answers_201_with_the_version_summary(
        self, post_upload, skops_artifact, ml_engineer
    ):
        response = post_upload(version="1", card=self.CARD)

        assert response.status_code == 201, response.content
        assert response.json() == {
            "name": "credit",
            "version": "1",
            "sha256": hashlib.sha256(skops_artifact).hexdigest(),
            "stage": "staging",
            "url": "/api/v1/models/credit/versions/1",
        }

    def test_it_stores_the_files_schema_and_card(
        self, post_upload, skops_artifact, background_csv, ml_engineer
    ):
        post_upload(version="1", card=self.CARD)

        version = ModelVersion.objects.select_related("registered_model").get()
        with version.artifact.open("rb") as artifact:
            assert artifact.read() == skops_artifact
        with version.background.open("rb") as background:
            assert background.read() == background_csv
        assert version.background_sha256 == hashlib.sha256(background_csv).hexdigest()
        assert version.background_rows == 60
        assert version.schema == credit_schema()
        assert (
            version.schema_sha256
            == hashlib.sha256(json.dumps(credit_schema(), sort_keys=True).encode()).hexdigest()
        )
        assert (version.description, version.intended_use, version.metrics) == (
            "Default risk of consumer loans.",
            "Pre-screening.",
            {"auc": 0.8},
        )
        assert (version.lime_mode, version.lime_sample_rate) == ("all", 1.0)
        model = version.registered_model
        assert (model.task, model.owner) == ("classification", ml_engineer)
        assert list(model.assignees.all()) == [ml_engineer]
        (change,) = StageChange.objects.all()
        assert (change.from_stage, change.to_stage, change.changed_by) == (
            "",
            "staging",
            ml_engineer,
        )

    def test_it_accepts_a_version_without_background(self, post_upload):
        response = post_upload(version="1", background=None)

        assert response.status_code == 201
        version = ModelVersion.objects.get()
        assert (version.background_rows, version.background_sha256, bool(version.background)) == (
            0,
            "",
            False,
        )

    def test_it_records_the_explain_configuration(self, post_upload):
        post_upload(version="1", explain=json.dumps({"lime": "sample", "lime_sample_rate": 0.25}))

        version = ModelVersion.objects.get()
        assert (version.lime_mode, version.lime_sample_rate) == ("sample", 0.25)

    def test_it_stores_the_default_agreement_thresholds_when_none_are_sent(self, post_upload):
        post_upload(version="1")

        assert ModelVersion.objects.get().explain_settings == {
            "agreement": {
                "min_fidelity": 0.5,
                "min_top_k_overlap": 0.0,
                "min_rank_correlation": 0.3,
            },
            "allow_approximate": False,
        }

    def test_it_stores_the_versions_own_agreement_thresholds(self, post_upload, engineer_client):
        agreement = {"min_fidelity": 0.7, "min_rank_correlation": 0.5}
        response = post_upload(version="1", explain=json.dumps({"agreement": agreement}))

        assert response.status_code == 201, response.content
        resolved = {**agreement, "min_top_k_overlap": 0.0}
        assert ModelVersion.objects.get().explain_settings == {
            "agreement": resolved,
            "allow_approximate": False,
        }
        body = engineer_client.get("/api/v1/models/credit/versions/1").json()
        assert body["explain"]["agreement"] == resolved

    def test_an_existing_version_is_a_409_and_nothing_changes(self, post_upload, model_version):
        response = post_upload(version="1")

        assert response.status_code == 409
        assert response.json()["error"]["code"] == "version_exists"
        assert response.json()["error"]["message"] == (
            "credit version 1 already exists; versions are immutable."
        )
        assert ModelVersion.objects.get() == model_version

    def test_a_new_version_joins_the_existing_model(self, post_upload, model_version):
        response = post_upload(version="2")

        assert response.status_code == 201
        assert sorted(
            model_version.registered_model.versions.values_list("version", flat=True)
        ) == [
            "1",
            "2",
        ]


class TestRefusedArtifacts:
    def test_random_bytes_are_refused_with_a_clear_message(self, post_upload):
        response = post_upload(random.Random(7).randbytes(4096))

        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_artifact"
        assert error["message"].startswith(
            "The artifact was refused: the artifact is not a readable skops file"
        )
        assert nothing_registered()

    def test_random_bytes_as_joblib_are_refused(self, post_upload):
        response = post_upload(random.Random(7).randbytes(4096), artifact_format="joblib")

        assert response.status_code == 400
        assert "the joblib artifact could not be loaded" in response.json()["error"]["message"]
        assert nothing_registered()

    def test_a_skops_file_with_an_untrusted_type_is_refused(self, post_upload, credit_pipeline):
        # A pipeline whose first step would call os.system on the inputs.
        hostile = Pipeline([("hook", FunctionTransformer(os.system)), *credit_pipeline.steps])

        response = post_upload(skops.io.dumps(hostile))

        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert "contains types that are not trusted" in message
        assert "system" in message
        assert nothing_registered()

    def test_a_schema_with_other_features_than_the_model_is_refused(self, post_upload):
        schema = credit_schema()
        schema["features"] = [f for f in schema["features"] if f["name"] != "housing"]
        schema["features"].append(
            {"name": "region", "type": "categorical", "categories": ["n", "s"]}
        )
        background = "\n".join(
            [
                "age,sex,income,debt_ratio,employment_years,loan_amount,"
                "loan_purpose,prior_defaults,has_guarantor,region",
                "40,female,40000,0.3,4,5000,car,0,false,n",
            ]
        ).encode()

        response = post_upload(schema=schema, background=background)

        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert "the schema does not match the features the model was trained on" in message
        assert "the model expects ['housing'] which the schema lacks" in message
        assert "the schema has ['region'] which the model does not use" in message
        assert nothing_registered()

    def test_a_schema_whose_classes_differ_from_the_models_is_refused(self, post_upload):
        schema = credit_schema()
        schema["target"] = {"type": "classification", "classes": ["approve", "deny"]}

        response = post_upload(schema=schema)

        assert response.status_code == 400
        message = response.json()["error"]["message"]
        expected = (
            "the model's classes ['bad', 'good'] differ from the schema's ['approve', 'deny']"
        )
        assert expected in message
        assert nothing_registered()

    def test_a_regression_schema_for_a_classifier_is_refused(self, post_upload):
        schema = credit_schema()
        schema["target"] = {"type": "regression"}

        response = post_upload(schema=schema)

        assert response.status_code == 400
        assert (
            "regression but the model predicts non-numbers" in response.json()["error"]["message"]
        )

    def test_an_unknown_artifact_format_is_refused(self, post_upload):
        response = post_upload(artifact_format="pickle")

        assert response.status_code == 400
        assert (
            response.json()["error"]["message"]
            == "artifact_format must be one of ['skops', 'joblib']."
        )

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("name", "Credit Model", "name must be lower-case letters"),
            ("version", "../1", "version must be letters"),
        ],
    )
    def test_bad_names_are_refused(self, post_upload, field, value, message):
        response = post_upload(**{field: value})

        assert response.status_code == 400
        assert response.json()["error"]["message"].startswith(message)


@pytest.mark.django_db
class TestJoblib:
    @pytest.mark.parametrize("role", roles.ROLES)
    def test_joblib_artifacts_are_accepted_from_trusted_roles_only(
        self, request, role, joblib_artifact, background_csv, api_client
    ):
        user = request.getfixturevalue(role)
        form = upload_form(
            joblib_artifact, version="1", artifact_format="joblib", background=background_csv
        )

        response = api_client(user).post(URL, form, format="multipart")

        trusted = {roles.REGISTER_MODELS, roles.UPLOAD_JOBLIB} <= roles.ROLE_CAPABILITIES[role]
        assert trusted == (role in (roles.ADMIN, roles.ML_ENGINEER))
        if trusted:
            assert response.status_code == 201
            assert ModelVersion.objects.get().artifact_format == "joblib"
        else:
            assert response.status_code == 403
            assert nothing_registered()
            assert AuditEvent.objects.get(action="access.denied").actor == user


class TestMalformedSchemas:
    @staticmethod
    def with_feature(**spec) -> dict:
        schema = credit_schema()
        schema["features"][0] = {"name": "age", **spec}
        return schema

    @pytest.mark.parametrize(
        ("schema", "problem"),
        [
            (with_feature(type="text"), "feature 'age'.type must be one of"),
            (with_feature(type="categorical"), "feature 'age'.categories must be a non-empty list"),
            (
                with_feature(type="numeric", min=10, max=5),
                "feature 'age': min 10 is greater than max 5",
            ),
            (with_feature(type="boolean", min=0), "feature 'age'.min must be a finite number"),
            (
                with_feature(type="numeric", colour="red"),
                "feature 'age' has unknown key(s) ['colour']",
            ),
            (
                with_feature(type="numeric", sensitive="yes"),
                "feature 'age'.sensitive must be true or false",
            ),
            (with_feature(type="categorical", categories=["a", "a"]), "categories has duplicates"),
            (
                with_feature(type="integer", protected=True, immutable=False),
                "feature 'age' is protected, so it is immutable",
            ),
            (
                with_feature(type="categorical", categories=["a"], direction="increase"),
                "feature 'age'.direction must be one of ['increase', 'decrease'] on a numeric",
            ),
            (with_feature(type="integer", step=0.5), "feature 'age'.step must be a whole number"),
            (
                with_feature(type="integer", groups=[40, 25]),
                "feature 'age'.groups must be a non-empty, increasing list of finite numbers",
            ),
            (
                with_feature(type="categorical", categories=["a"], groups=[1]),
                "feature 'age'.groups must be a non-empty, increasing list",
            ),
            (
                {
                    **credit_schema(),
                    "features": [*credit_schema()["features"], {"name": "age", "type": "integer"}],
                },
                "duplicate feature name(s) ['age']",
            ),
            (
                {**credit_schema(), "target": {"type": "classification", "classes": ["good"]}},
                "at least two classes",
            ),
            ({**credit_schema(), "target": {"type": "ranking"}}, "target.type must be one of"),
            (
                {
                    **credit_schema(),
                    "target": {
                        "type": "classification",
                        "classes": ["good", "bad"],
                        "positive_class": "ugly",
                    },
                },
                "positive_class 'ugly' is not among the classes",
            ),
            ({**credit_schema(), "extra": 1}, "schema has unknown key(s) ['extra']"),
            (
                {"features": [], "target": {"type": "regression"}},
                "schema.features must be a non-empty list",
            ),
            ([1, 2], "the schema must be an object"),
        ],
        ids=[
            "unknown_type",
            "categorical_without_categories",
            "min_above_max",
            "bounds_on_boolean",
            "unknown_feature_key",
            "flag_not_boolean",
            "duplicate_categories",
            "protected_declared_mutable",
            "direction_on_a_categorical",
            "fractional_step_on_an_integer",
            "groups_not_increasing",
            "groups_on_a_categorical",
            "duplicate_names",
            "one_class",
            "unknown_target_type",
            "positive_class_not_a_class",
            "unknown_schema_key",
            "no_features",
            "not_an_object",
        ],
    )
    def test_a_malformed_schema_is_refused_with_every_problem_listed(
        self, post_upload, schema, problem
    ):
        response = post_upload(schema=json.dumps(schema))

        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["code"], error["message"]) == ("invalid_schema", "The schema is invalid.")
        assert any(problem in detail for detail in error["details"]), error["details"]
        assert nothing_registered()

    def test_schema_that_is_not_json_is_refused(self, post_upload):
        response = post_upload(schema="{features: [")

        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_json"
        assert error["message"].startswith("schema is not valid JSON")


class TestBackground:
    def test_a_background_missing_a_column_is_refused(self, post_upload, credit_frame):
        columns = [c for c in credit_schema_names() if c != "income"]
        background = credit_frame[columns].head(10).to_csv(index=False).encode()

        response = post_upload(background=background)

        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_background"
        assert error["message"] == "background CSV lacks the column(s) ['income']."
        assert nothing_registered()

    def test_a_background_with_bad_values_names_the_lines(self, post_upload, credit_frame):
        frame = credit_frame[credit_schema_names()].head(10).astype(object)
        frame.loc[1, "age"] = "old"
        frame.loc[4, "loan_purpose"] = "yacht"
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)

        response = post_upload(background=buffer.getvalue().encode())

        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["code"], error["message"]) == (
            "invalid_background",
            "2 background row(s) do not fit the schema.",
        )
        assert error["details"][0] == {
            "line": 3,
            "errors": ["inputs.age: must be a number, got 'old'"],
        }
        assert error["details"][1]["line"] == 6
        assert error["details"][1]["errors"][0].startswith(
            "inputs.loan_purpose: 'yacht' is not a known"
        )
        assert nothing_registered()

    def test_a_background_naming_a_column_twice_is_refused(self, post_upload, credit_frame):
        """csv kept the last of two "income" columns: the SHAP baseline built on it."""
        frame = credit_frame[credit_schema_names()].head(10)
        text = frame.to_csv(index=False)
        header, *rows = text.splitlines()
        doubled = "\n".join([header + ",income", *(row + ",1" for row in rows)])

        response = post_upload(background=doubled.encode())

        error = response.json()["error"]
        assert (response.status_code, error["code"]) == (400, "invalid_background")
        assert (
            error["message"] == "background CSV repeats the column(s) ['income']; name each once."
        )
        assert nothing_registered()

    def test_a_background_row_with_a_cell_too_many_is_refused_not_shifted(
        self, post_upload, credit_frame
    ):
        frame = credit_frame[credit_schema_names()].head(10)
        header, *rows = frame.to_csv(index=False).splitlines()
        rows[2] = rows[2] + ",7"

        response = post_upload(background="\n".join([header, *rows]).encode())

        error = response.json()["error"]
        assert (response.status_code, error["code"]) == (400, "invalid_background")
        assert error["details"][0]["line"] == 4
        assert "cells where the header has" in error["details"][0]["errors"][0]
        assert nothing_registered()

    def test_a_background_that_is_not_utf8_is_refused(self, post_upload):
        response = post_upload(background=b"\xff\xfe\x00a,b")

        assert response.status_code == 400
        assert response.json()["error"]["message"] == "background must be a UTF-8 CSV file."

    def test_a_background_with_only_a_header_is_refused(self, post_upload):
        response = post_upload(background=(",".join(credit_schema_names()) + "\n").encode())

        assert response.status_code == 400
        assert response.json()["error"]["message"] == "background CSV has no rows."


def credit_schema_names() -> list[str]:
    return [f["name"] for f in credit_schema()["features"]]


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ({"owner": "me"}, "card has unknown field(s) ['owner']"),
        ({"metrics": [0.8]}, "card.metrics must be an object"),
    ],
)
def test_a_malformed_card_is_refused(post_upload, card, message):
    response = post_upload(card=card)

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)
    assert nothing_registered()


@pytest.mark.parametrize(
    ("explain", "key", "problem"),
    [
        ({"agreement": {"min_fidelity": 1.5}}, "min_fidelity", "must be a number from 0 to 1"),
        ({"agreement": {"min_fidelity": "high"}}, "min_fidelity", "must be a number from 0 to 1"),
        ({"agreement": {"min_top_k_overlap": True}}, "min_top_k_overlap", "from 0 to 1"),
        ({"agreement": {"min_top_k_overlap": -0.1}}, "min_top_k_overlap", "from 0 to 1"),
        ({"agreement": {"min_rank_correlation": -2}}, "min_rank_correlation", "from -1 to 1"),
        ({"agreement": {"min_rank_correlation": None}}, "min_rank_correlation", "from -1 to 1"),
        ({"agreement": {"min_fidelty": 0.6}}, "min_fidelty", "is not a setting; allowed"),
    ],
)
def test_a_bad_agreement_threshold_is_refused_naming_the_key(post_upload, explain, key, problem):
    response = post_upload(version="1", explain=json.dumps(explain))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_explain"
    assert f"explain.agreement.{key}" in error["message"]
    assert problem in error["details"][f"explain.agreement.{key}"]
    assert nothing_registered()


def test_every_bad_agreement_threshold_is_named_at_once(post_upload):
    explain = {"agreement": {"min_fidelity": 2, "min_rank_correlation": "x", "top_k": 5}}
    response = post_upload(version="1", explain=json.dumps(explain))

    assert response.status_code == 400
    assert sorted(response.json()["error"]["details"]) == [
        "explain.agreement.min_fidelity",
        "explain.agreement.min_rank_correlation",
        "explain.agreement.top_k",
    ]


@pytest.mark.parametrize(
    ("explain", "message"),
    [
        ({"agreement": 0.6}, "explain.agreement must be an object"),
        ([0.6], "explain must be a JSON object"),
        ({"lime": "sometimes"}, "explain.lime must be one of"),
        ({"lime": "sample", "lime_sample_rate": 0}, "explain.lime_sample_rate must be in (0, 1]"),
    ],
)
def test_a_malformed_explain_object_is_refused(post_upload, explain, message):
    response = post_upload(version="1", explain=json.dumps(explain))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_explain"
    assert response.json()["error"]["message"].startswith(message)
    assert nothing_registered()
