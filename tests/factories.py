"""Builders for request payloads: decisions as a production system sends them, model uploads."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import factory
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from auditapp.demo.credit import FEATURES, SCHEMA, applicants

MODEL_NAME = "credit"
VERSION = "1"
# The model card the tests register their credit versions with.
MODEL_CARD = {
    "description": "Consumer credit default risk.",
    "intended_use": "Pre-screening of loan applications.",
    "limitations": "Synthetic training data.",
    "training_data": "300 synthetic applicants.",
    "metrics": {"auc": 0.81},
}
# Cheap to compute (no model involved), so module level is fine.
APPLICANTS = applicants(300, seed=11)[FEATURES]


def applicant_inputs(n: int) -> dict[str, Any]:
    """The raw feature values of the n-th synthetic applicant, as JSON-ready Python values."""
    row = APPLICANTS.iloc[n % len(APPLICANTS)]
    return {
        name: (value.item() if hasattr(value, "item") else value) for name, value in row.items()
    }


def credit_schema() -> dict:
    """A private copy of the demo credit schema, safe to modify in a test."""
    return copy.deepcopy(SCHEMA)


def an_hour_ago() -> str:
    return (timezone.now() - timedelta(hours=1)).isoformat()


class DecisionPayloadFactory(factory.DictFactory):
    """One item of POST /api/v1/decisions for the credit model, valid by default."""

    model = MODEL_NAME
    version = VERSION
    request_id = factory.Sequence(lambda n: f"loan-{n:06d}")
    inputs = factory.Sequence(applicant_inputs)
    score = factory.Sequence(lambda n: round((n * 37 % 100) / 100, 2))
    prediction = factory.LazyAttribute(lambda o: "bad" if o.score >= 0.5 else "good")
    predicted_at = factory.LazyFunction(an_hour_ago)
    subject_ref = factory.Sequence(lambda n: f"c-{n:05x}")
    metadata = factory.LazyFunction(lambda: {"channel": "branch"})


def upload_form(
    artifact: bytes,
    *,
    name: str = MODEL_NAME,
    version: str = "2",
    artifact_format: str = "skops",
    schema: dict | str | None = None,
    background: bytes | None = None,
    card: dict | None = None,
    **extra: str,
) -> dict[str, Any]:
    """The multipart form of POST /api/v1/models."""
    form: dict[str, Any] = {
        "name": name,
        "version": version,
        "artifact_format": artifact_format,
        "artifact": SimpleUploadedFile(f"model.{artifact_format}", artifact),
        "schema": schema if isinstance(schema, str) else json.dumps(schema or credit_schema()),
        **extra,
    }
    if background is not None:
        form["background"] = SimpleUploadedFile("background.csv", background, "text/csv")
    if card is not None:
        form["card"] = json.dumps(card)
    return form
