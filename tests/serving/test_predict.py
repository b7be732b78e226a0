"""POST /api/v1/models/{name}/predict: the model's own answer, recorded as a decision.

Judged against the trained pipeline itself (its predict_proba on the same row), and
against the database: what is answered is what was recorded, and a refused request
stores nothing.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.accounts.services import create_user
from auditapp.decisions.models import PRODUCTION, Decision
from auditapp.hashing import decision_document
from auditapp.serving import services, warm
from explain import explainers
from explain.models import Explanation
from tests.factories import MODEL_NAME, DecisionPayloadFactory, applicant_inputs
from tests.serving.helpers import expected, instance, predict_url, put_policy, traffic_url
from tests.wire import round_trips

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture
def serving(versions, api_client, admin):
    """v1 in production through a policy, put by the admin."""
    put_policy(api_client(admin), production="1")
    return versions


def test_the_answer_is_the_pipelines_own_and_is_recorded_as_a_served_decision(
    api_client, ml_engineer, serving, pipelines
):
    sent = instance(7, subject_ref="c-007", metadata={"channel": "web"})
    response = api_client(ml_engineer).post(predict_url(), sent, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    prediction, score = expected(pipelines["1"], sent["inputs"])
    assert body["prediction"] == prediction
    assert body["score"] == pytest.approx(score, abs=1e-12)
    assert (body["version"], body["arm"]) == ("1", PRODUCTION)
    decision = Decision.objects.get(pk=body["decision_id"])
    assert decision.model_version == serving["1"]
    assert (decision.request_id, decision.subject_ref) == ("req-000007", "c-007")
    assert decision.full_inputs() == sent["inputs"] and decision.metadata == {"channel": "web"}
    assert (decision.prediction, decision.score) == (prediction, body["score"])
    assert (decision.source, decision.arm, decision.served_by) == ("serving", PRODUCTION, None)
    # The arm is sealed with the decision; its explanations are queued as any decision's.
    assert decision.compute_content_hash() == decision.content_hash
    document = decision_document(
        decision.hashed_fields(), decision.sensitive_names, decision.salt_bytes
    )
    assert document["arm"] == PRODUCTION
    assert set(Explanation.objects.filter(decision=decision).values_list("method", flat=True)) == {
        "shap",
        "lime",
    }
    event = AuditEvent.objects.get(action="decisions.ingested")
    assert event.details["source"] == "serving" and event.details["created"] == 1


def test_an_ingested_decision_hashes_as_it_always_did(model_version, ingest):
    (result,) = ingest(DecisionPayloadFactory())
    decision = Decision.objects.get(pk=result["id"])
    document = decision_document(
        decision.hashed_fields(), decision.sensitive_names, decision.salt_bytes
    )
    assert "arm" not in document and "served_by" not in document
    assert decision.compute_content_hash() == decision.content_hash


def test_a_batch_answers_each_instance_in_order(api_client, ml_engineer, serving, pipelines):
    sent = {"instances": [instance(n) for n in range(5)]}
    response = api_client(ml_engineer).post(predict_url(), sent, format="json")

    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert len({r["decision_id"] for r in results}) == 5
    for item, result in zip(sent["instances"], results, strict=True):
        prediction, score = expected(pipelines["1"], item["inputs"])
        assert (result["prediction"], result["version"], result["arm"]) == (
            prediction,
            "1",
            PRODUCTION,
        )
        assert result["score"] == pytest.approx(score, abs=1e-12)
        assert Decision.objects.get(pk=result["decision_id"]).request_id == item["request_id"]


def test_more_than_a_thousand_instances_are_refused_naming_the_limit(
    api_client, ml_engineer, serving
):
    sent = {"instances": [instance(n) for n in range(1001)]}
    response = api_client(ml_engineer).post(predict_url(), sent, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "too_many_instances"
    assert "1,001" in error["message"] and "1,000" in error["message"]
    assert Decision.objects.count() == 0


def test_each_bad_instance_and_field_is_named_and_nothing_is_stored(
    api_client, ml_engineer, serving
):
    missing_age = instance(2)
    del missing_age["inputs"]["age"]
    sent = {
        "instances": [
            instance(1),
            missing_age,
            {**instance(3), "prediction": "good", "colour": "blue"},
            {**instance(4), "inputs": {**applicant_inputs(4), "housing": "castle"}},
            {"inputs": applicant_inputs(5)},
        ]
    }
    response = api_client(ml_engineer).post(predict_url(), sent, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_instances"
    fields = {entry["index"]: {e["field"] for e in entry["errors"]} for entry in error["details"]}
    assert fields == {
        1: {"inputs.age"},
        2: {"prediction", "colour"},
        3: {"inputs.housing"},
        4: {"request_id"},
    }
    assert Decision.objects.count() == 0
    assert Explanation.objects.count() == 0


def test_a_retry_returns_the_same_decision_and_a_changed_one_conflicts(
    api_client, ml_engineer, serving
):
    client = api_client(ml_engineer)
    first = client.post(predict_url(), instance(9), format="json").json()
    again = client.post(predict_url(), instance(9), format="json")

    assert again.status_code == 200
    assert again.json() == first
    assert Decision.objects.count() == 1

    changed = {**instance(9), "inputs": applicant_inputs(10)}
    conflict = client.post(predict_url(), changed, format="json")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["details"][0]["id"] == first["decision_id"]
    assert Decision.objects.count() == 1


def test_without_a_policy_the_production_stage_serves(api_client, ml_engineer, admin, versions):
    client = api_client(ml_engineer)
    nothing = client.post(predict_url(), instance(1), format="json")
    assert nothing.status_code == 409
    assert nothing.json()["error"]["code"] == "nothing_to_serve"

    staged = api_client(admin).post(
        "/api/v1/models/credit/versions/2/stage", {"stage": "production"}, format="json"
    )
    assert staged.status_code == 200
    answer = client.post(predict_url(), instance(1), format="json").json()
    assert (answer["version"], answer["arm"]) == ("2", PRODUCTION)
    assert client.get(traffic_url()).json()["production"] == "2"


# --- who may --------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["compliance_officer", "auditor", "domain_expert", "no_role"])
def test_roles_without_predict_are_refused_and_nothing_is_stored(api_client, users, serving, who):
    response = api_client(users[who]).post(predict_url(), instance(1), format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "prediction" not in response.json()
    assert Decision.objects.count() == 0


def test_anonymous_is_refused(api_client, serving):
    assert api_client().post(predict_url(), instance(1), format="json").status_code == 401


@pytest.mark.parametrize(
    ("scopes", "status"),
    [(["predict"], 200), (["admin"], 200), (["read"], 403), (["ingest"], 403), (["report"], 403)],
)
def test_a_token_predicts_with_the_predict_scope_only(
    token_client, ml_engineer, serving, scopes, status
):
    client, _ = token_client(ml_engineer, scopes)
    response = client.post(predict_url(), instance(1), format="json")

    assert response.status_code == status
    assert Decision.objects.count() == (1 if status == 200 else 0)


def test_a_predict_token_may_not_change_the_traffic(token_client, ml_engineer, serving):
    client, _ = token_client(ml_engineer, ["predict"])
    response = client.put(traffic_url(), {"production": "2"}, format="json")
    assert response.status_code == 403


def test_a_hidden_model_answers_exactly_as_a_missing_one(
    api_client, token_client, role_groups, serving
):
    stranger = create_user("stranger", roles.ML_ENGINEER)  # not assigned to credit
    hidden = api_client(stranger).post(predict_url("credit"), instance(1), format="json")
    missing = api_client(stranger).post(predict_url("credit"[::-1]), instance(1), format="json")

    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == {
        **missing.json(),
        "error": {**missing.json()["error"], "message": "No model named 'credit'."},
    }
    assert missing.json()["error"]["message"] == "No model named 'tiderc'."
    # A token narrowed to other models sees it no more than a stranger does.
    admin_token, _ = token_client(serving["1"].created_by, ["predict"], models=["fraud"])
    assert admin_token.post(predict_url(), instance(1), format="json").status_code == 404
    assert Decision.objects.count() == 0


def test_a_reader_checks_a_served_decisions_hash_as_the_readme_says(
    api_client, ml_engineer, auditor, serving
):
    """Independently of hashing.py: the README's recipe, with the arm and served_by it adds
    for a served decision, from what an auditor (masked features) reads."""
    sent = instance(3, subject_ref="c-003")
    decision_id = (
        api_client(ml_engineer).post(predict_url(), sent, format="json").json()["decision_id"]
    )
    d = api_client(auditor).get(f"/api/v1/decisions/{decision_id}").json()

    keys = ("model", "version", "artifact_sha256", "request_id", "subject_ref", "prediction")
    keys += ("score", "predicted_at", "recorded_at", "source", "metadata")
    doc = {k: d[k] for k in keys}
    # Document form 2: the non-sensitive inputs the auditor reads, checked against their
    # commitment with the derived salt shown to every reader; the commitments hashed.
    shown = {k: v for k, v in d["inputs"].items() if k not in d["masked_features"]}
    opened = {"salt": d["inputs_salt"], "values": shown}
    assert d["document_form"] == 2
    assert (
        hashlib.sha256(orjson.dumps(opened, option=orjson.OPT_SORT_KEYS)).hexdigest()
        == d["inputs_commitment"]
    )
    doc["inputs"] = d["inputs_commitment"]
    doc["sensitive_inputs"] = d["sensitive_inputs_commitment"]
    doc["document_form"] = 2
    assert d["masked_features"] and d["arm"] == PRODUCTION and d["served_by"] is None
    doc["arm"], doc["served_by"] = d["arm"], d["served_by"]
    for moment in ("predicted_at", "recorded_at"):  # as the README says: +00:00, microseconds
        doc[moment] = (
            datetime.fromisoformat(doc[moment]).astimezone(UTC).isoformat(timespec="microseconds")
        )
    canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    assert hashlib.sha256(canonical).hexdigest() == d["content_hash"]


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_a_version_whose_artifact_cannot_be_loaded_answers_503_naming_it_and_stores_nothing(
    api_client, ml_engineer, serving, damage
):
    """An artifact changed after registration (its sha256 no longer matches) or gone from
    storage: the API's error shape, the version named, no decision recorded."""
    artifact = serving["1"].artifact
    if damage == "changed":
        with artifact.open("r+b") as handle:
            handle.write(b"tampered")
    else:
        artifact.storage.delete(artifact.name)
    warm.clear()
    explainers._contexts.clear()  # a process that had not loaded it yet

    response = api_client(ml_engineer).post(predict_url(), instance(1), format="json")

    assert response.status_code == 503, response.content[:300]
    assert int(response["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "model_unavailable"
    assert "credit version 1 cannot be loaded" in error["message"]
    assert ("sha256" if damage == "changed" else "not found") in error["message"]
    assert not Decision.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="round trips to PostgreSQL")
def test_a_prediction_is_stored_in_five_round_trips_after_the_policy_read(ml_engineer, serving):
    """The store of one served decision: BEGIN, the sealing lock with the decision's id,
    then its row, work rows and event sent together, the pipeline's end, COMMIT. Without
    a token there is no configuration revision to keep the policy in force by: it is read
    first, a round trip of its own."""
    actor = roles.Actor(user=ml_engineer)
    model = services.model_for(actor, MODEL_NAME, roles.PREDICT)
    services.predict(actor, model, instance(1))

    with round_trips() as waits, CaptureQueriesContext(connection) as queries:
        (served,), _ = services.predict(actor, model, instance(2, subject_ref="c-2"))

    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    assert statements == [
        "SELECT",
        "BEGIN",
        "SELECT",
        "SELECT",
        "INSERT",
        "INSERT",
        "WITH",
        "COMMIT",
    ]
    assert waits == [1 + 5]
    stored = Decision.objects.get(pk=served.decision_id)
    assert (stored.request_id, stored.subject_ref, stored.arm) == ("req-000002", "c-2", PRODUCTION)
    assert set(Explanation.objects.filter(decision=stored).values_list("method", flat=True))
    assert AuditEvent.objects.filter(action="decisions.ingested", details__ids=[[stored.pk] * 2])


def test_a_prediction_looks_its_request_id_up_through_the_unique_keys(
    api_client, ml_engineer, serving
):
    """A new request_id is not looked up (the unique keys refuse a used one); a retry is,
    through the (model, request_id) keys, never a scan of the model's decisions
    (tests/decisions/test_request_id_lookups.py says why)."""
    client = api_client(ml_engineer)
    with CaptureQueriesContext(connection) as queries:
        first = client.post(predict_url(), instance(3), format="json")
    assert first.status_code == 200
    statements = [q["sql"] for q in queries.captured_queries if "request_id" in q["sql"]]
    assert not [sql for sql in statements if sql.lstrip().startswith("SELECT")]

    with CaptureQueriesContext(connection) as queries:
        retry = client.post(predict_url(), instance(3), format="json")
    assert retry.status_code == 200
    assert retry.json()["decision_id"] == first.json()["decision_id"]
    statements = [q["sql"] for q in queries.captured_queries if "request_id" in q["sql"]]
    reads = [sql for sql in statements if sql.lstrip().startswith("SELECT")]
    assert reads
    if connection.vendor == "postgresql":
        assert all("decisions_decision_unique" in sql for sql in reads)
