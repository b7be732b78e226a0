"""Bad search parameters get a 400 naming the parameter, never a 500 or a silent pass.

The findings: `feature.income__gte=NaN` or `=1e400` and `feature.sex=%00` gave 500s
(and cut CSV exports off mid-stream); `has_outcome=maybe` was accepted silently.
"""

from __future__ import annotations

import pytest

from tests.factories import DecisionPayloadFactory

# embedded: the search's SQL differs on SQLite (tests/conftest.py)
pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

BAD = [
    ("feature.income__gte", "NaN"),
    ("feature.income__gte", "1e400"),
    ("feature.income__lte", "-inf"),
    ("feature.age", "Infinity"),
    ("feature.loan_purpose", "car\x00"),
    ("feature.loan_purpose__gte", "car"),
    ("feature.has_guarantor", "maybe"),
    ("has_outcome", "maybe"),
    ("score_min", "NaN"),
    ("score_min", "1e400"),
    ("score_max", "-1e400"),
    ("prediction", "bad\x00"),
    ("subject_ref", "\x00"),
    ("model", "credit\x00"),
    ("top_reason", "income\x00"),
    ("from", "not a time"),
    # At the ends of the calendar: no UTC equivalent (an OverflowError on SQLite).
    ("from", "0001-01-01T00:00:00+01:00"),
    ("to", "9999-12-31T23:59:59-14:00"),
    ("ordering", "inputs__income"),
    ("limit", "1e3"),
    ("cursor", "%%%"),
]


@pytest.fixture
def recorded(model_version, ingest):
    return ingest(*DecisionPayloadFactory.build_batch(3))


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_bad_search_parameter_is_a_400_naming_it(
    api_client, compliance_officer, recorded, name, value
):
    response = api_client(compliance_officer).get(
        "/api/v1/decisions", {"model": "credit", name: value}
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert name in (error["details"] or {}) or name in error["message"], error


@pytest.mark.parametrize(
    ("name", "value"), [(n, v) for n, v in BAD if n not in ("ordering", "limit", "cursor")]
)
def test_a_bad_export_is_refused_before_the_first_byte(
    client, compliance_officer, recorded, name, value
):
    client.force_login(compliance_officer)

    response = client.get("/decisions/export.csv", {"model": "credit", name: value})

    assert response.status_code == 400
    assert not response.streaming
    assert b"request_id" not in response.content


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("actor", "admin\x00"),
        ("action", "\x00"),
        ("object_id", "1\x00"),
        ("from", "0001-01-01T00:00:00+01:00"),
        ("to", "9999-12-31T23:59:59-14:00"),
        ("from", "yesterday"),
    ],
)
def test_a_bad_access_log_filter_is_a_400_naming_it(api_client, auditor, name, value):
    response = api_client(auditor).get("/api/v1/audit/events", {name: value})

    assert response.status_code == 400, response.content
    assert name in response.json()["error"]["details"]
