"""Recording decisions: what is stored, the explanation rows, the audit event, idempotency."""

from __future__ import annotations

from datetime import datetime

import pytest

from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from explain.models import Explanation
from tests.factories import DecisionPayloadFactory

URL = "/api/v1/decisions"


@pytest.fixture
def engineer_client(api_client, ml_engineer):
    return api_client(ml_engineer)


def stored_rows() -> tuple[int, int]:
    return Decision.objects.count(), Explanation.objects.count()


def ingested_events():
    return AuditEvent.objects.filter(action="decisions.ingested")


@pytest.mark.usefixtures("model_version")
class TestRecording:
    def test_it_answers_201_with_one_result_per_item_in_order(self, engineer_client):
        items = DecisionPayloadFactory.build_batch(5)

        response = engineer_client.post(URL, {"decisions": items}, format="json")

        assert response.status_code == 201, response.content
        results = response.json()["results"]
        assert [r["request_id"] for r in results] == [i["request_id"] for i in items]
        assert [r["status"] for r in results] == ["created"] * 5
        stored = Decision.objects.in_bulk([r["id"] for r in results])
        assert [stored[r["id"]].request_id for r in results] == [i["request_id"] for i in items]

    def test_it_accepts_a_single_decision_object(self, engineer_client):
        item = DecisionPayloadFactory()

        response = engineer_client.post(URL, item, format="json")

        assert response.status_code == 201
        (result,) = response.json()["results"]
        assert result["request_id"] == item["request_id"]
        assert Decision.objects.get().pk == result["id"]

    def test_it_stores_exactly_what_was_sent(self, engineer_client, model_version, ml_engineer):
        item = DecisionPayloadFactory(
            predicted_at="2026-01-05T10:15:30.250000+02:00",
            metadata={"channel": "online", "branch": {"id": 7}},
        )

        response = engineer_client.post(URL, item, format="json")

        decision = Decision.objects.get(pk=response.json()["results"][0]["id"])
        assert decision.registered_model == model_version.registered_model
        assert decision.model_version == model_version
        assert decision.request_id == item["request_id"]
        assert decision.subject_ref == item["subject_ref"]
        assert decision.full_inputs() == item["inputs"]
        # the sensitive ones (income, sex) are sealed: the clear column holds the others
        assert decision.inputs == {
            k: v for k, v in item["inputs"].items() if k not in ("income", "sex")
        }
        assert decision.prediction == item["prediction"]
        assert decision.score == item["score"]
        assert decision.predicted_at == datetime.fromisoformat(item["predicted_at"])
        assert decision.metadata == {"channel": "online", "branch": {"id": 7}}
        assert decision.source == "api"
        assert decision.recorded_by == ml_engineer
        assert decision.client == "ml_engineer"

    def test_optional_fields_default_to_empty(self, engineer_client):
        item = DecisionPayloadFactory()
        del item["score"], item["subject_ref"], item["metadata"]

        response = engineer_client.post(URL, item, format="json")

        assert response.status_code == 201
        decision = Decision.objects.get()
        assert (decision.score, decision.subject_ref, decision.metadata) == (None, None, {})

    def test_the_content_hash_is_the_one_anyone_can_recompute(self, engineer_client):
        items = DecisionPayloadFactory.build_batch(3)

        engineer_client.post(URL, {"decisions": items}, format="json")

        decisions = list(Decision.objects.with_related())
        assert len(decisions) == 3
        for decision in decisions:
            assert len(decision.content_hash) == 64
            assert decision.content_hash == decision.compute_content_hash()
        assert len({d.content_hash for d in decisions}) == 3

    def test_it_creates_pending_shap_and_lime_explanations(self, engineer_client):
        items = DecisionPayloadFactory.build_batch(3)

        response = engineer_client.post(URL, {"decisions": items}, format="json")

        ids = [r["id"] for r in response.json()["results"]]
        explanations = Explanation.objects.filter(decision_id__in=ids)
        assert sorted(explanations.values_list("decision_id", "method", "status")) == sorted(
            (i, method, "pending") for i in ids for method in ("shap", "lime")
        )

    def test_it_creates_only_shap_when_lime_is_on_demand(
        self, engineer_client, register, ml_engineer
    ):
        register(ml_engineer, version="2", explain={"lime": "on_demand"})
        items = DecisionPayloadFactory.build_batch(2, version="2")

        response = engineer_client.post(URL, {"decisions": items}, format="json")

        assert response.status_code == 201
        ids = [r["id"] for r in response.json()["results"]]
        assert sorted(Explanation.objects.values_list("decision_id", "method")) == [
            (i, "shap") for i in sorted(ids)
        ]

    def test_it_records_one_audit_event_per_request_and_model_with_the_counts(
        self, engineer_client, ml_engineer
    ):
        answer = engineer_client.post(
            URL, {"decisions": DecisionPayloadFactory.build_batch(4)}, format="json"
        )
        ids = sorted(result["id"] for result in answer.json()["results"])

        (event,) = ingested_events()
        assert event.actor == ml_engineer
        assert event.object_type == "decisions.decision"
        assert ids == list(range(ids[0], ids[0] + 4))
        assert event.details == {
            "created": 4,
            "duplicates": 0,
            "source": "api",
            "model": "credit",
            "ids": [
                [ids[0], ids[-1]]
            ],  # the decisions it created, as runs: verification reads them
        }
        assert event.model == "credit"


@pytest.mark.usefixtures("model_version")
class TestIdempotency:
    def test_resending_a_request_id_returns_the_stored_id_as_duplicate(self, engineer_client):
        item = DecisionPayloadFactory()
        first = engineer_client.post(URL, item, format="json").json()["results"][0]
        rows_before = stored_rows()

        response = engineer_client.post(URL, item, format="json")

        assert response.status_code == 201
        assert response.json()["results"] == [
            {"request_id": item["request_id"], "id": first["id"], "status": "duplicate"}
        ]
        assert stored_rows() == rows_before == (1, 2)
        assert [e.details["duplicates"] for e in ingested_events().order_by("id")] == [0, 1]

    def test_a_batch_mixing_new_and_known_request_ids_stores_only_the_new(self, engineer_client):
        known = DecisionPayloadFactory()
        stored_id = engineer_client.post(URL, known, format="json").json()["results"][0]["id"]
        fresh = DecisionPayloadFactory()

        response = engineer_client.post(URL, {"decisions": [fresh, known]}, format="json")

        results = response.json()["results"]
        assert [r["status"] for r in results] == ["created", "duplicate"]
        assert results[1]["id"] == stored_id
        assert Decision.objects.count() == 2

    @pytest.mark.parametrize(
        "change",
        [
            {"score": 0.99, "prediction": "bad"},
            {"subject_ref": "someone-else"},
            {"predicted_at": "2026-01-01T00:00:00+00:00"},
            {"metadata": {"channel": "online"}},
        ],
        ids=["score", "subject_ref", "predicted_at", "metadata"],
    )
    def test_the_same_request_id_with_other_content_is_a_409_and_stores_nothing(
        self, engineer_client, change
    ):
        item = DecisionPayloadFactory(score=0.1, prediction="good")
        stored_id = engineer_client.post(URL, item, format="json").json()["results"][0]["id"]
        fresh = DecisionPayloadFactory()
        rows_before = stored_rows()

        response = engineer_client.post(
            URL, {"decisions": [fresh, {**item, **change}]}, format="json"
        )

        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "request_id_conflict"
        assert error["details"] == [{"index": 1, "request_id": item["request_id"], "id": stored_id}]
        assert stored_rows() == rows_before
        assert not Decision.objects.filter(request_id=fresh["request_id"]).exists()

    def test_changed_inputs_under_a_known_request_id_are_a_conflict(self, engineer_client):
        item = DecisionPayloadFactory()
        engineer_client.post(URL, item, format="json")
        item["inputs"]["income"] = item["inputs"]["income"] + 1

        response = engineer_client.post(URL, item, format="json")

        assert response.status_code == 409
        assert Decision.objects.count() == 1

    def test_the_same_request_id_under_another_model_is_a_different_decision(
        self, engineer_client, register, ml_engineer
    ):
        register(ml_engineer, name="credit-eu", version="1")
        item = DecisionPayloadFactory()

        first = engineer_client.post(URL, item, format="json").json()["results"][0]
        second = engineer_client.post(URL, {**item, "model": "credit-eu"}, format="json")

        assert second.status_code == 201
        assert second.json()["results"][0]["status"] == "created"
        assert second.json()["results"][0]["id"] != first["id"]
