"""Reading models and versions, changing stages, and the immutability of a version."""

from __future__ import annotations

import pytest
from django.utils.dateparse import parse_datetime

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.errors import Conflict, InvalidInput
from auditapp.registry.models import ModelVersion, StageChange
from auditapp.registry.services import change_stage
from tests.factories import credit_schema

STAGE_URL = "/api/v1/models/credit/versions/1/stage"


@pytest.fixture
def officer_client(api_client, compliance_officer):
    return api_client(compliance_officer)


@pytest.fixture
def engineer_client(api_client, ml_engineer):
    return api_client(ml_engineer)


class TestReading:
    def test_the_list_shows_each_model_with_its_versions(
        self, officer_client, register, ml_engineer
    ):
        register(ml_engineer, version="1")
        register(ml_engineer, version="2")
        register(ml_engineer, name="affordability", version="2024.1")

        models = officer_client.get("/api/v1/models").json()["results"]

        assert [m["name"] for m in models] == ["affordability", "credit"]
        assert [m["task"] for m in models] == ["classification", "classification"]
        assert [v["version"] for v in models[1]["versions"]] == ["2", "1"]
        assert models[0]["versions"][0]["url"] == "/api/v1/models/affordability/versions/2024.1"

    def test_the_model_detail_names_its_owner_and_versions(self, officer_client, model_version):
        body = officer_client.get("/api/v1/models/credit").json()

        assert body["name"] == "credit"
        assert body["description"] == "Consumer credit default risk."
        assert body["owner"] == "ml_engineer"
        assert body["versions"] == [
            {
                "name": "credit",
                "version": "1",
                "sha256": model_version.artifact_sha256,
                "stage": "staging",
                "url": "/api/v1/models/credit/versions/1",
            }
        ]

    def test_the_version_detail_shows_schema_card_and_history(self, officer_client, model_version):
        body = officer_client.get("/api/v1/models/credit/versions/1").json()

        assert body["artifact_format"] == "skops"
        assert body["schema"] == credit_schema()
        assert body["schema_sha256"] == model_version.schema_sha256
        assert body["background_rows"] == 60
        assert body["background_sha256"] == model_version.background_sha256
        assert body["card"] == {
            "description": "Consumer credit default risk.",
            "intended_use": "Pre-screening of loan applications.",
            "limitations": "Synthetic training data.",
            "training_data": "300 synthetic applicants.",
            "metrics": {"auc": 0.81},
        }
        assert body["explain"] == {
            "lime": "all",
            "lime_sample_rate": 1.0,
            "allow_approximate": False,
            "agreement": {
                "min_fidelity": 0.5,
                "min_top_k_overlap": 0.0,
                "min_rank_correlation": 0.3,
            },
            # Which adverse decisions get counterfactuals (the default: every one).
            "counterfactuals": {"mode": "all", "sample_rate": 1.0},
        }
        assert body["self_test"]["shap"]["passed"] is True
        assert body["created_by"] == "ml_engineer"
        assert parse_datetime(body["created_at"]) == model_version.created_at
        assert [(h["from"], h["to"], h["by"]) for h in body["stage_history"]] == [
            (None, "staging", "ml_engineer")
        ]

    @pytest.mark.parametrize(
        "url",
        [
            "/api/v1/models/fraud",
            "/api/v1/models/fraud/versions/1",
            "/api/v1/models/credit/versions/9",
        ],
    )
    def test_unknown_models_and_versions_are_404(self, officer_client, model_version, url):
        response = officer_client.get(url)

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


class TestStages:
    def test_a_stage_change_records_who_and_from_where_to_where(
        self, engineer_client, model_version, ml_engineer
    ):
        response = engineer_client.post(
            STAGE_URL, {"stage": "production"}, format="json", REMOTE_ADDR="10.0.0.8"
        )

        assert response.status_code == 200
        assert response.json()["stage"] == "production"
        assert [(h["from"], h["to"], h["by"]) for h in response.json()["stage_history"]] == [
            (None, "staging", "ml_engineer"),
            ("staging", "production", "ml_engineer"),
        ]
        model_version.refresh_from_db()
        assert model_version.stage == "production"
        change = StageChange.objects.latest("id")
        assert (change.from_stage, change.to_stage, change.changed_by) == (
            "staging",
            "production",
            ml_engineer,
        )
        event = AuditEvent.objects.get(action="model_version.stage_changed")
        assert (event.actor, event.object_id, event.ip) == (
            ml_engineer,
            str(model_version.pk),
            "10.0.0.8",
        )
        assert event.details == {"from_stage": "staging", "to_stage": "production"}

    def test_stages_can_follow_one_another(self, model_version, admin):
        actor = roles.Actor(user=admin)
        change_stage(actor, model_version, "production")
        change_stage(actor, model_version, "archived")

        assert list(
            StageChange.objects.filter(model_version=model_version).values_list(
                "from_stage", "to_stage"
            )
        ) == [("", "staging"), ("staging", "production"), ("production", "archived")]

    def test_an_unknown_stage_is_refused(self, engineer_client, model_version):
        response = engineer_client.post(STAGE_URL, {"stage": "retired"}, format="json")

        assert response.status_code == 400
        assert response.json()["error"]["message"] == (
            "stage must be one of ['staging', 'production', 'archived'], got 'retired'."
        )
        assert StageChange.objects.count() == 1

    def test_moving_to_the_current_stage_is_a_conflict(self, model_version, ml_engineer):
        with pytest.raises(Conflict, match="already in staging"):
            change_stage(roles.Actor(user=ml_engineer), model_version, "staging")
        with pytest.raises(InvalidInput):
            change_stage(roles.Actor(user=ml_engineer), model_version, None)
        assert StageChange.objects.count() == 1
        assert not AuditEvent.objects.filter(action="model_version.stage_changed").exists()


class TestImmutability:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("version", "1b"),
            ("artifact_sha256", "0" * 64),
            ("schema", {"features": []}),
            ("limitations", "none"),
        ],
    )
    def test_a_version_refuses_to_save_changes_other_than_its_stage(
        self, model_version, field, value
    ):
        original = getattr(model_version, field)
        setattr(model_version, field, value)

        with pytest.raises(ValueError, match="immutable"):
            model_version.save()
        with pytest.raises(ValueError, match="immutable"):
            model_version.save(update_fields=[field, "stage"])
        assert getattr(ModelVersion.objects.get(pk=model_version.pk), field) == original

    def test_only_the_stage_can_be_saved(self, model_version):
        model_version.stage = "archived"
        model_version.save(update_fields=["stage"])

        assert ModelVersion.objects.get(pk=model_version.pk).stage == "archived"
