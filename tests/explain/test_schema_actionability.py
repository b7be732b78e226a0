"""The schema's actionability fields (immutable, direction, step), what counterfactuals read:
checked like every other field, and absent from a schema that does not declare them (its
document, and so its sha256, stays exactly as written)."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from auditapp.demo.credit import SCHEMA as CREDIT_SCHEMA
from explain.schema import SchemaError, parse_schema
from tests.datasets import german_schema


def schema_with(**feature) -> dict:
    return {
        "features": [{"name": "x", "type": "numeric", **feature}],
        "target": {"type": "regression"},
    }


def problems(spec: dict) -> list[str]:
    with pytest.raises(SchemaError) as raised:
        parse_schema(spec)
    return raised.value.problems


def sha256(spec: dict) -> str:
    """As the registry hashes a version's schema (registry/services.py)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def without_actionability(spec: dict) -> dict:
    """The demo schema as it was before it declared what an applicant could change."""
    spec = copy.deepcopy(spec)
    for feature in spec["features"]:
        for key in ("immutable", "direction", "step"):
            feature.pop(key, None)
    return spec


@pytest.mark.parametrize(
    "spec", [without_actionability(CREDIT_SCHEMA), german_schema()], ids=["credit", "german"]
)
def test_a_schema_without_the_fields_parses_as_before_and_keeps_its_document(spec):
    before = copy.deepcopy(spec)
    schema = parse_schema(spec)
    assert schema.raw == before
    assert sha256(schema.raw) == sha256(before)
    assert "immutable" not in json.dumps(schema.raw)
    for feature in schema.features:
        assert feature.direction is None and feature.step is None
        # Protected features are immutable by default; every other feature is mutable.
        assert feature.immutable is feature.protected
        assert feature.mutable is not feature.protected


def test_the_fields_are_read():
    schema = parse_schema(
        {
            "features": [
                {"name": "age", "type": "integer", "protected": True, "immutable": True},
                {"name": "defaults", "type": "integer", "immutable": True},
                {"name": "years", "type": "integer", "direction": "increase", "step": 1},
                {"name": "income", "type": "numeric", "direction": "increase", "step": 500},
                {"name": "loan", "type": "numeric", "direction": "decrease", "step": 0.5},
                {"name": "purpose", "type": "categorical", "categories": ["a", "b"]},
                {"name": "flag", "type": "boolean", "immutable": False},
            ],
            "target": {"type": "regression"},
        }
    )
    features = {f.name: f for f in schema.features}
    assert [n for n, f in features.items() if f.mutable] == [
        "years",
        "income",
        "loan",
        "purpose",
        "flag",
    ]
    assert features["age"].immutable and not features["age"].mutable
    assert features["income"].direction == "increase" and features["income"].step == 500.0
    assert features["loan"].direction == "decrease" and features["loan"].step == 0.5


def test_a_protected_feature_cannot_be_declared_mutable():
    found = problems(schema_with(protected=True, immutable=False))
    assert found == [
        "feature 'x' is protected, so it is immutable: a counterfactual never changes a "
        "protected feature; remove immutable: false"
    ]


@pytest.mark.parametrize(
    ("feature", "expected"),
    [
        ({"immutable": "yes"}, "feature 'x'.immutable must be true or false"),
        (
            {"direction": "up"},
            "feature 'x'.direction must be one of ['increase', 'decrease'] on a numeric "
            "feature, got 'up' on a numeric feature",
        ),
        (
            {"step": 0},
            "feature 'x'.step must be a positive finite number on a numeric feature, got 0",
        ),
        (
            {"step": -1},
            "feature 'x'.step must be a positive finite number on a numeric feature, got -1",
        ),
        (
            {"step": True},
            "feature 'x'.step must be a positive finite number on a numeric feature, got True",
        ),
        (
            {"step": "5"},
            "feature 'x'.step must be a positive finite number on a numeric feature, got '5'",
        ),
        (
            {"immutable": True, "direction": "increase"},
            "feature 'x'.direction makes no sense on an immutable feature",
        ),
    ],
)
def test_a_bad_field_is_named_with_its_feature(feature, expected):
    assert problems(schema_with(**feature)) == [expected]


def test_direction_and_step_are_refused_on_categoricals_and_booleans():
    spec = {
        "features": [
            {"name": "c", "type": "categorical", "categories": ["a"], "direction": "increase"},
            {"name": "b", "type": "boolean", "step": 1},
        ],
        "target": {"type": "regression"},
    }
    assert problems(spec) == [
        "feature 'c'.direction must be one of ['increase', 'decrease'] on a numeric feature, "
        "got 'increase' on a categorical feature",
        "feature 'b'.step must be a positive finite number on a numeric feature, got 1",
    ]


def test_an_integer_feature_steps_by_whole_numbers():
    spec = schema_with(step=2.5)
    spec["features"][0]["type"] = "integer"
    assert problems(spec) == ["feature 'x'.step must be a whole number on an integer feature"]
    spec["features"][0]["step"] = 2.0
    assert parse_schema(spec).features[0].step == 2.0


def test_the_new_keys_are_known_and_an_unknown_one_still_refused():
    found = problems(schema_with(mutable=True))
    assert len(found) == 1 and "unknown key(s) ['mutable']" in found[0]
    assert "'immutable'" in found[0] and "'direction'" in found[0] and "'step'" in found[0]
