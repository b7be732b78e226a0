"""Outcome semantics and value formatting in the schema (explain/schema.py, no Django)."""

from __future__ import annotations

import copy

import pytest

from auditapp.demo.credit import SCHEMA
from explain.schema import SchemaError, parse_schema


def schema_with(**target) -> dict:
    spec = copy.deepcopy(SCHEMA)
    spec["target"] = {"type": "classification", "classes": ["good", "bad"], **target}
    return spec


def test_without_favourable_the_positive_class_stays_the_adverse_one():
    target = parse_schema(schema_with(positive_class="bad")).target

    assert target.favourable is None
    assert (target.favourable_class, target.adverse_class, target.adverse_sign) == (
        "good",
        "bad",
        1,
    )
    assert target.is_adverse("bad") is True and target.is_adverse("good") is False
    # Today's wording: the class itself.
    assert (target.outcome_text("bad"), target.outcome_text("good")) == ("bad", "good")
    assert (target.tone("bad"), target.tone("good")) == ("adverse", "favourable")


def test_a_declared_favourable_class_gives_words_and_colours():
    target = parse_schema(schema_with(positive_class="bad", favourable="good")).target

    assert (target.favourable_class, target.adverse_class, target.adverse_name) == (
        "good",
        "bad",
        "bad",
    )
    assert (target.outcome_text("bad"), target.outcome_text("good")) == ("declined", "approved")
    assert (target.tone("bad"), target.tone("good")) == ("adverse", "favourable")


def test_a_favourable_positive_class_turns_the_direction_of_reasons():
    target = parse_schema(
        schema_with(positive_class="good", favourable="good", wording={"bad": "refused"})
    ).target

    assert target.adverse_sign == -1
    assert target.adverse_class == "bad"
    assert target.outcome_text("bad") == "refused"
    assert target.outcome_text("good") == "approved"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"favourable": "ugly"}, "target.favourable 'ugly' is not among the classes"),
        ({"wording": {"ugly": "no"}}, "target.wording must map classes to short texts"),
        ({"wording": ["declined"]}, "target.wording must map classes to short texts"),
    ],
)
def test_bad_outcome_semantics_are_refused(target, message):
    with pytest.raises(SchemaError) as caught:
        parse_schema(schema_with(positive_class="bad", **target))
    assert any(message in problem for problem in caught.value.problems)


def test_numbers_are_shown_readably_and_as_the_schema_asks():
    spec = copy.deepcopy(SCHEMA)
    spec["features"][2].update(unit="EUR", decimals=2)  # income
    features = {f.name: f for f in parse_schema(spec).features}
    plain = {f.name: f for f in parse_schema(SCHEMA).features}

    assert plain["income"].format_value(19210.89) == "19,211"
    assert plain["loan_amount"].format_value(5080.0) == "5,080"
    assert plain["debt_ratio"].format_value(0.4) == "0.4"
    assert plain["debt_ratio"].format_value(1.25) == "1.25"
    assert plain["age"].format_value(35) == "35"
    assert plain["has_guarantor"].format_value(True) == "yes"
    assert plain["sex"].format_value("female") == "female"
    assert plain["income"].format_value(None) == "not given"
    assert features["income"].format_value(19210.89) == "19,210.89 EUR"
    assert features["income"].format_value(1234.5) == "1,234.50 EUR"


def test_unit_and_decimals_are_checked():
    spec = copy.deepcopy(SCHEMA)
    spec["features"][1]["decimals"] = 2  # sex: categorical
    spec["features"][2]["decimals"] = -1
    spec["features"][3]["unit"] = 5
    with pytest.raises(SchemaError) as caught:
        parse_schema(spec)
    assert sum("decimals must be a whole number" in p for p in caught.value.problems) == 2
    assert any("'debt_ratio'.unit must be a short text" in p for p in caught.value.problems)
