"""A version whose schema marks a feature `protected` (and so gives it to the model as an
input) carries a standing warning on its page and in its compliance report."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
from django.test import Client

from tests.factories import credit_schema
from tests.reports.conftest import pdf_text, read_file

pytestmark = pytest.mark.django_db

WARNING = "This model takes protected attributes as inputs: Age (years), Sex."


@pytest.fixture
def unprotected(register, ml_engineer):
    """credit v2: the same model, its schema marking nothing protected."""
    schema = credit_schema()
    for feature in schema["features"]:
        feature.pop("protected", None)
    return register(ml_engineer, version="2", schema=schema)


def version_page(user, version: str) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(f"/models/credit/versions/{version}/")
    assert response.status_code == 200
    return response.content.decode()


def generated(generate, version: str, fmt: str):
    """A compliance report of the version over January 2001, generated now."""
    body = {
        "kind": "model_compliance",
        "model": "credit",
        "version": version,
        "from": "2001-01-01T00:00:00Z",
        "to": "2001-02-01T00:00:00Z",
        "format": fmt,
    }
    return generate(body)


def report(generate, version: str, fmt: str) -> bytes:
    return read_file(generated(generate, version, fmt))


def test_the_version_page_warns_of_protected_inputs(model_version, unprotected, compliance_officer):
    page = version_page(compliance_officer, "1")
    assert 'id="protected-inputs"' in page
    assert WARNING in page
    assert "favourable outcome “good”" in page

    plain = version_page(compliance_officer, "2")
    assert 'id="protected-inputs"' not in plain
    assert "protected attributes as inputs" not in plain


def test_the_compliance_report_carries_the_finding_in_json_csv_and_pdf(
    model_version, unprotected, generate
):
    identity = orjson.loads(report(generate, "1", "json"))["data"]["sections"]["model_identity"]
    assert identity["protected_inputs"] == ["age", "sex"]
    assert identity["protected_input_warning"].startswith(WARNING)
    rows = list(csv.reader(io.StringIO(report(generate, "1", "csv").decode())))
    cells = {(r[0], r[1]): r[2] for r in rows if len(r) == 3}
    assert cells[("model_identity", "protected_input_warning")].startswith(WARNING)
    assert report(generate, "1", "pdf").startswith(b"%PDF")

    plain = orjson.loads(report(generate, "2", "json"))["data"]["sections"]["model_identity"]
    assert plain["protected_inputs"] == []
    assert plain["protected_input_warning"] is None


def pdf_report(generate, version: str) -> str:
    """The PDF's words, its lines joined."""
    return " ".join(pdf_text(generated(generate, version, "pdf")).split())


def test_the_compliance_pdf_shows_the_warning(model_version, unprotected, generate):
    """Read from the PDF itself (pdftotext), not from the HTML it is printed from."""
    assert WARNING in pdf_report(generate, "1")
    assert "protected attributes as inputs" not in pdf_report(generate, "2")
