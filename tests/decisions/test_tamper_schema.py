"""Unmasking by editing the registry: flipping `"sensitive": false` in a version's schema.

The finding (issue "Proof that holds"): the flip went unnoticed and unmasked the
version's sensitive inputs for auditors. Decisions now commit to their sensitive
inputs (hashing.decision_document), and verification reads which inputs those
are from the version's schema: the flipped schema no longer reproduces the
hashes its decisions were sealed with.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection

from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.verification import verify_chain
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db


def test_a_schema_edited_to_unmask_a_feature_is_named_by_verification(model_version, ingest):
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(3))]
    seal_new_records()
    assert verify_chain().ok

    schema = dict(model_version.schema)
    schema["features"] = [
        {**feature, "sensitive": False} if feature["name"] == "income" else feature
        for feature in schema["features"]
    ]
    with connection.cursor() as cursor:  # as someone with database access would
        cursor.execute(
            "UPDATE registry_modelversion SET schema = %s WHERE id = %s",
            [json.dumps(schema), model_version.pk],
        )

    result = verify_chain()
    named = [(p["kind"], p["id"]) for p in result.problems()]
    # the hashes of the decisions it recorded no longer match, in log order ...
    assert (result.first_bad["kind"], result.first_bad["id"]) == ("decision", min(ids))
    assert [i for kind, i in named if kind == "decision"] == ids
    # ... and nor does the version's own record (model versions are in the log)
    assert ("model_version", model_version.pk) in named
