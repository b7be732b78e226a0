"""POST /api/v1/decisions refuses bad items one by one, naming the item and the field."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from explain.models import Explanation
from tests.factories import DecisionPayloadFactory

URL = "/api/v1/decisions"

pytestmark = pytest.mark.usefixtures("model_version")


@pytest.fixture
def engineer_client(api_client, ml_engineer):
    return api_client(ml_engineer)


def post_json(client, body):
    """Send `body` as JSON text (a str is sent as is, so it can carry NaN or Infinity)."""
    text = body if isinstance(body, str) else json.dumps(body)
    return client.generic("POST", URL, text, content_type="application/json")


def stored_rows() -> tuple[int, int]:
    return Decision.objects.count(), Explanation.objects.count()


def set_input(name, value):
    def change(item):
        item["inputs"][name] = value

    return change


def drop_input(name):
    def change(item):
        del item["inputs"][name]

    return change


def set_field(name, value):
    def change(item):
        item[name] = value

    return change


def drop_field(name):
    def change(item):
        del item[name]

    return change


def in_future(item):
    """Beyond the default window (ATTEST_PREDICTED_AT_MAX_AHEAD_MINUTES, one day)."""
    item["predicted_at"] = (timezone.now() + timedelta(days=2)).isoformat()


# (case id, change to a valid item, field named in the error, words in the reason)
INVALID_ITEMS = [
    ("missing_feature", drop_input("age"), "inputs.age", "is missing"),
    ("unknown_feature", set_input("colour", "red"), "inputs.colour", "is not a feature"),
    ("string_for_numeric", set_input("income", "52000"), "inputs.income", "must be a number"),
    ("string_for_integer", set_input("age", "41"), "inputs.age", "must be a number"),
    ("bool_for_numeric", set_input("income", True), "inputs.income", "must be a number"),
    ("number_for_boolean", set_input("has_guarantor", 1), "inputs.has_guarantor", "true or false"),
    (
        "string_for_boolean",
        set_input("has_guarantor", "yes"),
        "inputs.has_guarantor",
        "true or false",
    ),
    ("number_for_categorical", set_input("housing", 1), "inputs.housing", "not a known category"),
    ("fraction_for_integer", set_input("age", 41.5), "inputs.age", "must be an integer"),
    ("below_min", set_input("age", 17), "inputs.age", "≥ 18"),
    ("above_max", set_input("debt_ratio", 3.5), "inputs.debt_ratio", "≤ 3"),
    ("unknown_category", set_input("loan_purpose", "yacht"), "inputs.loan_purpose", "'yacht'"),
    ("null_not_nullable", set_input("income", None), "inputs.income", "not nullable"),
    ("inputs_not_object", set_field("inputs", [1, 2]), "inputs", "must be an object"),
    ("bad_timestamp", set_field("predicted_at", "yesterday"), "predicted_at", "not an ISO-8601"),
    ("number_timestamp", set_field("predicted_at", 1700000000), "predicted_at", "ISO-8601 string"),
    (
        "naive_timestamp",
        set_field("predicted_at", "2026-01-05T10:00:00"),
        "predicted_at",
        "no time zone",
    ),
    ("future_timestamp", in_future, "predicted_at", "in the future"),
    ("unknown_model", set_field("model", "mortgage"), "version", "'mortgage'"),
    ("unknown_version", set_field("version", "99"), "version", "'99'"),
    (
        "prediction_not_a_class",
        set_field("prediction", "maybe"),
        "prediction",
        "not one of the classes",
    ),
    ("prediction_boolean", set_field("prediction", True), "prediction", "not one of the classes"),
    ("score_above_one", set_field("score", 1.5), "score", "[0, 1]"),
    ("score_below_zero", set_field("score", -0.01), "score", "[0, 1]"),
    ("score_string", set_field("score", "0.4"), "score", "finite number or null"),
    ("unknown_top_level_field", set_field("colour", "red"), "colour", "not a decision field"),
    ("missing_request_id", drop_field("request_id"), "request_id", "is required"),
    ("missing_prediction", drop_field("prediction"), "prediction", "is required"),
    ("empty_request_id", set_field("request_id", ""), "request_id", "non-empty string"),
    ("long_subject_ref", set_field("subject_ref", "x" * 201), "subject_ref", "at most 200"),
    ("metadata_not_object", set_field("metadata", ["a"]), "metadata", "must be an object"),
]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [case[1:] for case in INVALID_ITEMS],
    ids=[case[0] for case in INVALID_ITEMS],
)
def test_it_names_the_item_and_field_of_an_invalid_decision(engineer_client, change, field, reason):
    valid, invalid = DecisionPayloadFactory(), DecisionPayloadFactory()
    change(invalid)

    response = post_json(engineer_client, {"decisions": [valid, invalid]})

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_decisions"
    assert error["message"] == "1 of 2 decisions are invalid; nothing was stored."
    (item,) = error["details"]
    assert item["index"] == 1
    assert item["request_id"] == invalid.get("request_id")
    reasons = {e["field"]: e["message"] for e in item["errors"]}
    assert field in reasons, reasons
    assert reason in reasons[field]
    assert stored_rows() == (0, 0)


@pytest.mark.parametrize(
    ("field", "literal", "where"),
    [
        ("income", "NaN", "inputs.income"),
        ("income", "Infinity", "inputs.income"),
        ("loan_amount", "-Infinity", "inputs.loan_amount"),
        ("age", "NaN", "inputs.age"),
    ],
)
def test_it_reports_nan_and_infinity_in_inputs_per_item(engineer_client, field, literal, where):
    item = DecisionPayloadFactory()
    item["inputs"][field] = "__NOT_A_NUMBER__"
    body = json.dumps({"decisions": [DecisionPayloadFactory(), item]})
    body = body.replace('"__NOT_A_NUMBER__"', literal)
    assert literal in body

    response = post_json(engineer_client, body)

    assert response.status_code == 400, response.content
    (invalid,) = response.json()["error"]["details"]
    assert invalid["index"] == 1
    assert invalid["errors"] == [
        {"field": where, "message": f"must be a finite number, got {float(literal)}"}
    ]
    assert stored_rows() == (0, 0)


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_it_reports_a_non_finite_score(engineer_client, literal):
    body = json.dumps({**DecisionPayloadFactory(), "score": "__S__"}).replace('"__S__"', literal)

    response = post_json(engineer_client, body)

    assert response.status_code == 400
    (invalid,) = response.json()["error"]["details"]
    assert invalid["index"] == 0
    assert [e["field"] for e in invalid["errors"]] == ["score"]
    assert "finite number" in invalid["errors"][0]["message"]


def test_it_reports_nan_inside_metadata(engineer_client):
    body = json.dumps({**DecisionPayloadFactory(), "metadata": {"x": "__S__"}})
    response = post_json(engineer_client, body.replace('"__S__"', "NaN"))

    assert response.status_code == 400
    (invalid,) = response.json()["error"]["details"]
    (error,) = invalid["errors"]
    assert error["field"] == "metadata.x"
    assert error["message"] == "must be a finite number, got nan"


def test_it_reports_every_problem_of_one_item(engineer_client):
    item = DecisionPayloadFactory(score=2.0, prediction="maybe")
    item["inputs"]["age"] = 5
    del item["inputs"]["sex"]

    response = post_json(engineer_client, item)

    (invalid,) = response.json()["error"]["details"]
    assert {e["field"] for e in invalid["errors"]} == {
        "inputs.age",
        "inputs.sex",
        "prediction",
        "score",
    }


def test_it_refuses_a_request_id_repeated_inside_one_batch(engineer_client):
    first = DecisionPayloadFactory(request_id="loan-dup")
    other = DecisionPayloadFactory()
    repeat = DecisionPayloadFactory(request_id="loan-dup")

    response = post_json(engineer_client, {"decisions": [first, other, repeat]})

    assert response.status_code == 400
    (invalid,) = response.json()["error"]["details"]
    assert invalid == {
        "index": 2,
        "request_id": "loan-dup",
        "errors": [{"field": "request_id", "message": "repeats item 0 of this batch"}],
    }
    assert stored_rows() == (0, 0)


def test_a_batch_with_invalid_items_stores_nothing_and_lists_every_bad_index(
    engineer_client, ingest
):
    ingest(DecisionPayloadFactory())
    rows_before = stored_rows()
    items = DecisionPayloadFactory.build_batch(6)
    items[1]["inputs"]["age"] = 200
    items[4]["prediction"] = "unknown"
    items[5] = "not a decision"
    events_before = AuditEvent.objects.filter(action="decisions.ingested").count()

    response = post_json(engineer_client, {"decisions": items})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == "3 of 6 decisions are invalid; nothing was stored."
    assert [item["index"] for item in error["details"]] == [1, 4, 5]
    assert error["details"][2]["errors"] == [{"field": "", "message": "must be an object"}]
    assert stored_rows() == rows_before == (1, 2)
    assert AuditEvent.objects.filter(action="decisions.ingested").count() == events_before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            [DecisionPayloadFactory.build()],
            'The body must be a decision object or {"decisions": [...]}.',
        ),
        ('"a string"', 'The body must be a decision object or {"decisions": [...]}.'),
        (42, 'The body must be a decision object or {"decisions": [...]}.'),
        ({"decisions": {"request_id": "x"}}, '"decisions" must be a list of decision objects.'),
        ({"decisions": []}, '"decisions" is empty.'),
    ],
    ids=["list", "string", "number", "decisions_not_a_list", "empty_batch"],
)
def test_it_refuses_a_body_that_is_not_a_decision_or_a_batch(engineer_client, body, message):
    response = post_json(engineer_client, body)

    assert response.status_code == 400
    assert response.json() == {"error": {"code": "invalid", "message": message, "details": None}}
    assert stored_rows() == (0, 0)


def test_it_refuses_malformed_json(engineer_client):
    response = post_json(engineer_client, '{"decisions": [')

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_it_refuses_more_than_ten_thousand_decisions_with_413(engineer_client, settings):
    body = json.dumps({"decisions": [{}] * (settings.ATTEST_MAX_BATCH + 1)})

    response = post_json(engineer_client, body)

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large"
    assert error["message"].startswith("10001 decisions in one request; at most 10000")
    assert stored_rows() == (0, 0)
