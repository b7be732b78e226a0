"""A model the actor may not see answers exactly as a model that does not exist.

The findings: `/decisions/export.csv?model=hr` printed hr's feature names in its
header; `feature.zzz=1` answered "'zzz' is not a feature of this model" for a
hidden model but 200 for a made-up one; a token narrowed with `--models` read
every model's events in the audit log.
"""

from __future__ import annotations

import re

import pytest

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.accounts.services import create_user
from tests.factories import DecisionPayloadFactory, upload_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorded(model_version, ingest):
    return ingest(*DecisionPayloadFactory.build_batch(3))


def csv_text(response) -> str:
    return b"".join(response.streaming_content).decode()


def test_the_csv_export_of_a_hidden_model_is_that_of_a_missing_one(client, outsider, recorded):
    client.force_login(outsider)

    hidden = client.get("/decisions/export.csv", {"model": "credit"})
    missing = client.get("/decisions/export.csv", {"model": "no-such-model"})

    # refused alike, naming only the name asked for
    assert hidden.status_code == missing.status_code == 400
    assert without_csrf(hidden).replace("credit", "no-such-model") == without_csrf(missing)
    assert "income" not in hidden.content.decode()


@pytest.mark.parametrize(
    "feature", [{"feature.zzz": "1"}, {"feature.income__gte": "1"}, {"feature.age": "x"}]
)
def test_feature_filters_on_a_hidden_model_answer_as_on_a_missing_one(
    api_client, outsider, recorded, feature
):
    client = api_client(outsider)

    hidden = client.get("/api/v1/decisions", {"model": "credit", **feature})
    missing = client.get("/api/v1/decisions", {"model": "no-such-model", **feature})

    assert hidden.status_code == missing.status_code == 400
    assert hidden.content.decode().replace("credit", "no-such-model") == missing.content.decode()
    assert list(hidden.json()["error"]["details"]) == ["model"]


def test_the_search_page_of_a_hidden_model_is_that_of_a_missing_one(client, outsider, recorded):
    client.force_login(outsider)

    hidden = client.get("/decisions/", {"model": "credit", "feature.zzz": "1"})
    missing = client.get("/decisions/", {"model": "no-such-model", "feature.zzz": "1"})

    assert hidden.status_code == missing.status_code == 400
    assert "Annual income" not in hidden.content.decode()
    assert without_csrf(hidden).replace("credit", "no-such-model") == without_csrf(missing)


def test_a_hidden_model_s_page_address_is_that_of_a_missing_one(client, outsider, recorded):
    """/models/<name>/ leads to the model's version page: for a model the reader may not
    see it answers exactly as for a name no model has."""
    client.force_login(outsider)

    hidden = client.get("/models/credit/")
    missing = client.get("/models/no-such-model/")

    assert hidden.status_code == missing.status_code == 404
    assert without_csrf(hidden).replace("credit", "no-such-model") == without_csrf(missing)


def without_csrf(response) -> str:
    text = re.sub(r'"X-CSRFToken": "[^"]+"', "", response.content.decode())
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", text)


def test_a_token_narrowed_to_models_reads_only_their_events(
    token_client, register, admin, ml_engineer, ingest, compliance_officer, recorded
):
    register(ml_engineer, name="hr")
    ingest(DecisionPayloadFactory(model="hr"))
    narrowed, _ = token_client(compliance_officer, ["read"], models=["hr"])

    rows = narrowed.get("/api/v1/audit/events", {"limit": 500}).json()["results"]

    assert rows, "the hr events are listed"
    assert {row["id"] for row in rows} == set(
        AuditEvent.objects.filter(model="hr").values_list("id", flat=True)
    )
    everyone = AuditEvent.objects.exclude(model="hr")
    assert everyone.filter(model="credit").exists() and everyone.filter(model="").exists()
    text = str(rows)
    assert "credit" not in text


def test_ingesting_two_models_at_once_records_an_event_for_each(model_version, register, ingest):
    hr = register(model_version.created_by, name="hr")
    ingest(
        DecisionPayloadFactory(),
        DecisionPayloadFactory(),
        DecisionPayloadFactory(model="hr", version=hr.version),
    )
    events = AuditEvent.objects.filter(action="decisions.ingested").order_by("model")
    assert [(e.model, e.details["created"]) for e in events] == [("credit", 2), ("hr", 1)]


def test_registering_a_hidden_models_name_says_only_that_the_name_is_taken(
    api_client, model_version, skops_artifact, background_csv
):
    stranger = create_user("ml_engineer_2", roles.ML_ENGINEER, password="a-long-passphrase")
    form = upload_form(skops_artifact, name="credit", version="9", background=background_csv)

    response = api_client(stranger).post("/api/v1/models", form, format="multipart")

    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "name_taken",
        "message": "The name 'credit' is taken; choose another.",
        "details": None,
    }
