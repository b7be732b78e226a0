"""The protected_reason rule over plain values: which decisions it queues, and why."""

from __future__ import annotations

import copy

from auditapp.demo.credit import SCHEMA
from auditapp.reviews import rules
from explain.schema import parse_schema

# Sex (protected) pushes hardest towards "bad", then two unprotected features.
ATTRIBUTIONS = {"sex": 0.9, "prior_defaults": 0.5, "debt_ratio": 0.2, "income": -0.4}


def schema(protected=True, **target):
    spec = copy.deepcopy(SCHEMA)
    if not protected:
        for feature in spec["features"]:
            feature.pop("protected", None)
    spec["target"].update(target)
    return parse_schema(spec)


def test_a_declined_decision_resting_on_a_protected_attribute_is_queued():
    (found,) = rules.protected_reasons(schema(), "bad", ATTRIBUTIONS)

    assert found["rule"] == rules.PROTECTED_REASON == "protected_reason"
    assert found["detail"] == "Sex among the main reasons for “bad”; its notice leaves it out"
    assert rules.RULE_LABELS[rules.PROTECTED_REASON]


def test_an_approved_decision_or_a_schema_without_protected_inputs_is_not():
    assert rules.protected_reasons(schema(), "good", ATTRIBUTIONS) == []
    assert rules.protected_reasons(schema(protected=False), "bad", ATTRIBUTIONS) == []
    # Beyond the four principal reasons it is not one of them.
    behind = {"prior_defaults": 0.9, "debt_ratio": 0.8, "income": 0.7, "housing": 0.6, "sex": 0.1}
    assert rules.protected_reasons(schema(), "bad", behind) == []
    # A push under 1 % of the decision's total is no reason at all.
    barely = {"sex": 0.001, "prior_defaults": 0.05, "debt_ratio": 0.04, "income": -0.06}
    assert rules.protected_reasons(schema(), "bad", barely) == []


def test_without_favourable_the_positive_class_is_the_adverse_one():
    raw = copy.deepcopy(SCHEMA)
    del raw["target"]["favourable"]
    legacy = parse_schema(raw)

    assert rules.protected_reasons(legacy, "bad", ATTRIBUTIONS)
    assert rules.protected_reasons(legacy, "good", ATTRIBUTIONS) == []
