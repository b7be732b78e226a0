"""Feature and top-reason filters of the search (one definition for the API and the page)."""

from __future__ import annotations

import pytest

from explain import batches
from tests.factories import DecisionPayloadFactory, applicant_inputs


@pytest.fixture
def recorded(model_version, ingest):
    # The same 40 applicants whichever tests ran before in this process (the factory's
    # sequence goes on across tests): with some others, all 40 ranked income in their top 3.
    payloads = [DecisionPayloadFactory(inputs=applicant_inputs(n)) for n in range(40)]
    return {r["request_id"]: r["id"] for r in ingest(*payloads)}, payloads


def search(client, **params) -> set[str]:
    response = client.get("/api/v1/decisions", {"limit": 500, **params})
    assert response.status_code == 200, response.content
    return {d["request_id"] for d in response.json()["results"]}


def test_numeric_feature_ranges(api_client, compliance_officer, recorded):
    _, payloads = recorded
    client = api_client(compliance_officer)
    expected = {p["request_id"] for p in payloads if 30 <= p["inputs"]["age"] <= 45}
    found = search(client, model="credit", **{"feature.age__gte": "30", "feature.age__lte": "45"})
    assert found == expected and 0 < len(found) < 40


def test_categorical_and_boolean_exact_matches(api_client, compliance_officer, recorded):
    _, payloads = recorded
    client = api_client(compliance_officer)
    cars = {p["request_id"] for p in payloads if p["inputs"]["loan_purpose"] == "car"}
    assert search(client, model="credit", **{"feature.loan_purpose": "car"}) == cars
    guaranteed = {p["request_id"] for p in payloads if p["inputs"]["has_guarantor"]}
    assert search(client, model="credit", **{"feature.has_guarantor": "true"}) == guaranteed


def test_bad_feature_filters_name_the_parameter(api_client, compliance_officer, recorded):
    client = api_client(compliance_officer)
    response = client.get(
        "/api/v1/decisions",
        {"model": "credit", "feature.shoe_size": "44", "feature.age__gte": "old"},
    )
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert set(details) == {"feature.shoe_size", "feature.age__gte"}


def test_top_reason_finds_decisions_whose_shap_ranks_the_feature_in_its_top_three(
    api_client, compliance_officer, recorded, model_version
):
    ids, _ = recorded
    batches.run_batch(model_version.pk, "shap", list(ids.values()))
    from explain.models import Explanation

    expected = {
        e.decision.request_id
        for e in Explanation.objects.filter(method="shap").select_related("decision")
        if "income" in e.top_features[:3]
    }
    found = search(api_client(compliance_officer), top_reason="income")
    assert found == expected and 0 < len(found) < 40
