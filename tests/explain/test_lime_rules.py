"""LIME's bars carry their rule ("Annual income (EUR) ≤ 26,902"), derived when shown.

The stored result keeps one weight per feature (it is sealed, and stays as it is);
the rule is derived from the version's background by the discretizer the explainer
builds. The reference here is `lime` itself: a LimeTabularExplainer built in this file
on the same background with the same settings, whose `as_list()` names each feature's
rule, formatted as the schema formats numbers.
"""

from __future__ import annotations

import io
import math
import re
from html import escape
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from lime.lime_tabular import LimeTabularExplainer

from explain import batches, engine, lime_backend, presenters
from explain.lime_backend import LimeRules
from explain.models import Explanation, ExplanationResult
from explain.presenters import lime_rule_texts
from explain.schema import parse_schema
from tests.factories import DecisionPayloadFactory, applicant_inputs, credit_schema

# --- the reference: lime's own rule strings, formatted as the page formats numbers ---

RULE_PATTERNS = [
    re.compile(r"^(?P<name>\w+)=(?P<category>.+)$"),
    re.compile(r"^(?P<low>-?[\d.]+) < (?P<name>\w+) <= (?P<high>-?[\d.]+)$"),
    re.compile(r"^(?P<name>\w+) <= (?P<high>-?[\d.]+)$"),
    re.compile(r"^(?P<name>\w+) > (?P<low>-?[\d.]+)$"),
]


def formatted(rule: str, schema) -> tuple[str, str]:
    """(feature, label) of one of lime's rule strings: the schema's label, "≤" for "<=",
    numbers in the schema's format; a whole-number feature's bounds rounded down (for
    integers, x ≤ 39.5 is x ≤ 39 and x > 39.5 is x > 39)."""
    match = next(m for p in RULE_PATTERNS if (m := p.match(rule)))
    parts = match.groupdict()
    feature = next(f for f in schema.features if f.name == parts["name"])

    def number(text: str) -> str:
        value = float(text)
        return feature.format_value(math.floor(value) if feature.type == "integer" else value)

    if parts.get("category") is not None:
        category = parts["category"]
        value = {"true": True, "false": False}[category] if feature.type == "boolean" else category
        return feature.name, f"{feature.label} = {feature.format_value(value)}"
    if parts.get("low") is None:
        return feature.name, f"{feature.label} \u2264 {number(parts['high'])}"
    if parts.get("high") is None:
        return feature.name, f"{feature.label} > {number(parts['low'])}"
    return feature.name, f"{number(parts['low'])} < {feature.label} \u2264 {number(parts['high'])}"


class ReferenceLime:
    """lime's LimeTabularExplainer on the background CSV, encoded here: a category as its
    index among the schema's categories, a boolean as 0/1; the settings the backend uses
    (discretize_continuous=True, the default quartile discretizer)."""

    def __init__(self, schema, background_csv: bytes, pipeline):
        self.schema = schema
        self.pipeline = pipeline
        self.label = [str(c) for c in pipeline.classes_].index(schema.target.positive_class)
        frame = pd.read_csv(io.BytesIO(background_csv))
        self.categorical = {
            i: list(f.categories) if f.type == "categorical" else ["false", "true"]
            for i, f in enumerate(schema.features)
            if f.type in ("categorical", "boolean")
        }
        self.explainer = LimeTabularExplainer(
            np.array([self.encode(row) for row in frame.to_dict("records")]),
            mode="classification",
            feature_names=schema.names,
            categorical_features=sorted(self.categorical),
            categorical_names=self.categorical,
            class_names=[str(c) for c in pipeline.classes_],
            discretize_continuous=True,
            random_state=0,
        )

    def encode(self, inputs: dict) -> list[float]:
        row = []
        for i, feature in enumerate(self.schema.features):
            value = inputs[feature.name]
            if feature.type == "categorical":
                row.append(float(self.categorical[i].index(value)))
            elif feature.type == "boolean":
                row.append(1.0 if value in (True, "True", "true") else 0.0)
            else:
                row.append(float(value))
        return row

    def predict(self, array: np.ndarray) -> np.ndarray:
        columns = {}
        for i, feature in enumerate(self.schema.features):
            column = array[:, i]
            if feature.type == "categorical":
                codes = np.clip(np.rint(column), 0, len(self.categorical[i]) - 1).astype(int)
                columns[feature.name] = np.asarray(self.categorical[i], dtype=object)[codes]
            elif feature.type == "boolean":
                columns[feature.name] = column >= 0.5
            else:
                columns[feature.name] = column
        return self.pipeline.predict_proba(pd.DataFrame(columns))

    def rules(self, inputs: dict) -> dict[str, str]:
        """Each feature's rule for these inputs, from as_list(), formatted."""
        explanation = self.explainer.explain_instance(
            np.array(self.encode(inputs)),
            self.predict,
            labels=(self.label,),
            num_features=len(self.schema.names),
            num_samples=300,  # the rules depend on the background and the value, not on this
        )
        return dict(
            formatted(rule, self.schema) for rule, _ in explanation.as_list(label=self.label)
        )


# --- the engine ----------------------------------------------------------------------


def test_the_rules_come_from_the_discretizer_the_explainer_builds(credit_pipeline, credit_frame):
    schema = parse_schema(credit_schema())
    background = schema.frame(credit_frame[schema.names].head(60).to_dict("records"))
    context = engine.ModelContext(credit_pipeline, schema, background, "b" * 64, "a" * 64)

    built = lime_backend.LimeExplainer(context).explainer.discretizer
    derived = LimeRules(schema, background).discretizer

    assert derived.names == built.names and derived.names
    for index in built.names:
        assert derived.mins[index] == built.mins[index]
        assert derived.maxs[index] == built.maxs[index]


def test_a_whole_number_features_bounds_hold_exactly_the_integers_of_its_bin():
    schema = parse_schema(
        {
            "features": [
                {"name": "children", "type": "integer", "label": "Children"},
                {"name": "rate", "type": "numeric", "label": "Rate", "unit": "%", "decimals": 1},
            ],
            "target": {"type": "regression"},
        }
    )
    background = schema.frame([{"children": n, "rate": n / 3} for n in range(12)])
    rules = LimeRules(schema, background)  # children's quartiles: 2.75, 5.5, 8.25

    texts = {n: rules.rule("children", n).text for n in range(12)}
    assert texts[2] == "Children \u2264 2"
    assert texts[3] == texts[5] == "2 < Children \u2264 5"
    assert texts[6] == texts[8] == "5 < Children \u2264 8"
    assert texts[9] == texts[11] == "Children > 8"
    for n in range(12):
        rule = rules.rule("children", n)
        assert (rule.lower is None or n > rule.lower) and (rule.upper is None or n <= rule.upper)
    # the schema's unit and decimals: quartiles 0.9166…, 1.8333…, 2.75
    assert rules.rule("rate", 1.0).text == "0.9 % < Rate \u2264 1.8 %"
    assert rules.rule("rate", None) is None


# --- the decision page ---------------------------------------------------------------


@pytest.fixture
def explained(model_version, ingest):
    """Twelve decisions with their LIME explanations (the worker's code, run here); the
    same twelve applicants whichever tests ran before."""
    payloads = [DecisionPayloadFactory(inputs=applicant_inputs(n)) for n in range(12)]
    ids = [r["id"] for r in ingest(*payloads)]
    batches.run_batch(model_version.pk, "lime", ids)
    assert Explanation.objects.filter(method="lime", status="done").count() == 12
    return dict(zip(ids, payloads, strict=True))


def shown_labels(client, decision_id: int) -> tuple[list[str], str]:
    response = client.get(f"/decisions/{decision_id}/explanations")
    assert response.status_code == 200
    return [label for label, _ in response.context["lime_chart"].rows], response.content.decode()


def test_each_lime_bar_is_labelled_with_limes_own_rule(
    client,
    compliance_officer,
    model_version,
    explained,
    background_csv,
    credit_pipeline,
):
    schema = model_version.parsed_schema
    reference = ReferenceLime(schema, background_csv, credit_pipeline)
    results_before = list(ExplanationResult.objects.order_by("pk").values())
    client.force_login(compliance_officer)

    shown = []
    for decision_id, payload in explained.items():
        labels, html = shown_labels(client, decision_id)
        expected = reference.rules(payload["inputs"])

        assert sorted(labels) == sorted(expected.values())
        for label in labels:
            assert escape(label) in html
        shown += labels

    # every kind of rule was compared: open below, between two quartiles, open above
    assert re.search(r"^[^<]* \u2264 ", "\n".join(shown), re.M)
    assert re.search(r"^\S+ < .* \u2264 ", "\n".join(shown), re.M)
    assert re.search(r"^[^<]* > ", "\n".join(shown), re.M)
    # Nothing stored changed: the rules are derived when shown.
    assert list(ExplanationResult.objects.order_by("pk").values()) == results_before


def test_the_rules_of_the_demo_decision_read_as_a_person_reads_numbers(
    client, compliance_officer, model_version, ingest
):
    inputs = {
        **DecisionPayloadFactory()["inputs"],
        "age": 38,
        "income": 25000.0,
        "employment_years": 9,
        "prior_defaults": 0,
        "has_guarantor": True,
        "loan_purpose": "car",
    }
    (result,) = ingest(DecisionPayloadFactory(inputs=inputs))
    batches.run_batch(model_version.pk, "lime", [result["id"]])
    client.force_login(compliance_officer)

    labels, _ = shown_labels(client, result["id"])

    # background quartiles (tests/conftest.py): age 35.75 / 39.5 / 48, income 26,902.39 /
    # 36,045.5 / 43,696.60, employment 1 / 3 / 9, prior defaults 0 / 0 / 0
    assert {
        "35 < Age (years) \u2264 39",
        "Annual income (EUR) \u2264 26,902",
        "3 < Years in current employment \u2264 9",
        "Previous defaults \u2264 0",
        "Has a guarantor = yes",
        "Loan purpose = car",
    } <= set(labels)


def test_an_auditor_sees_no_bar_nor_rule_of_a_masked_feature(client, auditor, explained):
    decision_id = next(iter(explained))
    client.force_login(auditor)

    labels, html = shown_labels(client, decision_id)

    assert len(labels) == 8  # ten features, income and sex masked
    assert not [label for label in labels if "Annual income" in label or "Sex" in label]
    assert "Annual income" not in html and "Sex" not in html


def test_a_result_not_computed_on_this_background_keeps_value_labels(model_version):
    inputs = DecisionPayloadFactory()["inputs"]
    own = {"discretize_continuous": True, "discretizer": "quartile"}

    def texts(**config):
        return lime_rule_texts(SimpleNamespace(config=config), model_version, inputs)

    assert len(texts(**own, background_sha256=model_version.background_sha256)) == 10
    assert texts(**own, background_sha256="0" * 64) == {}
    assert (
        texts(discretize_continuous=False, background_sha256=model_version.background_sha256) == {}
    )
    masked = lime_rule_texts(
        SimpleNamespace(config={**own, "background_sha256": model_version.background_sha256}),
        model_version,
        inputs,
        masked={"income", "sex"},
    )
    assert set(masked) == set(model_version.parsed_schema.names) - {"income", "sex"}


def test_a_background_changed_on_disk_keeps_value_labels_and_says_why(
    model_version, caplog, monkeypatch
):
    monkeypatch.setattr(presenters, "_rules", presenters.OrderedDict())  # nothing cached
    with open(model_version.background.path, "ab") as handle:
        handle.write(b"\n")
    config = {
        "discretize_continuous": True,
        "discretizer": "quartile",
        "background_sha256": model_version.background_sha256,
    }

    texts = lime_rule_texts(
        SimpleNamespace(config=config), model_version, DecisionPayloadFactory()["inputs"]
    )

    assert texts == {}
    assert "LIME rules of model version" in caplog.text
