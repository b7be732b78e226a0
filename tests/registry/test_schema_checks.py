"""The fast acceptance check of a feature never accepts what value_error refuses."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from explain.schema import parse_schema

SCHEMA = parse_schema(
    {
        "features": [
            {"name": "amount", "type": "numeric", "min": 0, "max": 1000},
            {"name": "free", "type": "numeric", "nullable": True},
            {"name": "count", "type": "integer", "min": -5, "max": 5},
            {"name": "flag", "type": "boolean"},
            {"name": "kind", "type": "categorical", "categories": ["a", "b"], "nullable": True},
        ],
        "target": {"type": "regression"},
    }
)

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.sampled_from(["a", "b"]),
    st.lists(st.integers(), max_size=2),
)


@given(value=values)
def test_fast_check_and_value_error_agree(value):
    for feature in SCHEMA.features:
        if feature.accepts(value):
            assert feature.value_error(value) is None, (feature.name, value)


@given(row=st.fixed_dictionaries({f.name: values for f in SCHEMA.features}))
def test_input_errors_finds_a_problem_exactly_when_some_value_is_refused(row):
    refused = {f.name for f in SCHEMA.features if f.value_error(row[f.name]) is not None}
    assert {field.removeprefix("inputs.") for field, _ in SCHEMA.input_errors(row)} == refused
