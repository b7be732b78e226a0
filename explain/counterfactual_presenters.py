"""Counterfactuals as people read them: the one sentence builder the decision page, the
notice and the API share, and the API's document, masked features withheld.

"The application would have been approved if the annual income had been at least
27,000 EUR and the loan amount at most 12,000 EUR." Words come from the schema: the
favourable outcome's wording (its target), each feature's label and unit (a unit in
the label's parentheses, "Loan amount (EUR)", counts as its unit) and its formatting.
A feature the reader may not see is named, its values withheld.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from explain.models import CounterfactualResult, CounterfactualWork
from explain.schema import Feature, Schema

_PARENTHESISED = re.compile(r"^(?P<noun>.*?)\s*\((?P<unit>[^()]{1,20})\)\s*$")
WITHHELD = "withheld"


def _noun_and_unit(feature: Feature) -> tuple[str, str]:
    """ "Annual income (EUR)" -> ("annual income", "EUR"); a declared unit wins."""
    label = feature.label.strip()
    unit = feature.unit
    match = _PARENTHESISED.match(label)
    if match and match.group("noun"):
        label = match.group("noun")
        unit = unit or match.group("unit")
    first = label.split(" ", 1)[0]
    if not (len(first) > 1 and first.isupper()):  # keep an acronym ("LTV ratio")
        label = label[:1].lower() + label[1:]
    return label, unit


def value_text(feature: Feature, value: Any) -> str:
    """A value as the schema formats it, with the label's unit when none is declared."""
    text = feature.format_value(value)
    _, unit = _noun_and_unit(feature)
    if unit and not feature.unit and feature.type in ("numeric", "integer") and value is not None:
        text = f"{text} {unit}"
    return text


def outcome_words(schema: Schema) -> tuple[str, str]:
    """("The application", "approved") when the schema words its outcomes; else
    ("The decision", "“good”"): the favourable class itself."""
    target = schema.target
    favourable = target.favourable_class
    words = target.outcome_text(favourable)
    if words != str(favourable):
        return ("The application" if words == "approved" else "The decision"), words
    return "The decision", f"“{favourable}”"


def change_phrase(
    feature: Feature, change: dict[str, Any], masked: Collection[str] = (), first: bool = True
) -> str:
    """ "the annual income had been at least 27,000 EUR" (after the first change: "the loan
    amount at most 12,000 EUR")."""
    noun, _ = _noun_and_unit(feature)
    verb = "had been " if first else ""
    if feature.name in masked:
        return f"the {noun} had been different (value {WITHHELD})"
    before, after = change.get("from"), change.get("to")
    if feature.type == "boolean":
        return f"the answer to “{feature.label}” had been {feature.format_value(after)}"
    if feature.type in ("numeric", "integer") and before is not None and after is not None:
        bound = "at least" if after > before else "at most"
        return f"the {noun} {verb}{bound} {value_text(feature, after)}"
    return f"the {noun} {verb}{value_text(feature, after)}"


def _joined(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def sentence(schema: Schema, changes: dict[str, dict], masked: Collection[str] = ()) -> str:
    """One counterfactual in plain words, its changes in schema order."""
    subject, outcome = outcome_words(schema)
    features = [f for f in schema.features if f.name in changes]
    parts = [
        change_phrase(f, changes[f.name], masked, first=(n == 0)) for n, f in enumerate(features)
    ]
    return f"{subject} would have been {outcome} if {_joined(parts)}."


# -- reading them back --------------------------------------------------------------------
def work_of(decision) -> CounterfactualWork | None:
    return (
        CounterfactualWork.objects.filter(decision=decision)
        .select_related("result__config", "result__requested_by", "requested_by")
        .first()
    )


def status_of(decision, work: CounterfactualWork | None, adverse: bool) -> str:
    """pending, done, failed; none-needed (not the adverse outcome); not-requested (adverse,
    but the version's policy left it out: ask for them)."""
    if work is None:
        return "not-requested" if adverse else "none-needed"
    if work.status in (CounterfactualWork.PENDING, CounterfactualWork.RUNNING):
        return "pending"
    return work.status


def shown(schema: Schema, result: CounterfactualResult, masked: Collection[str] = ()) -> list:
    """The stored counterfactuals, nearest first, each with its sentence; a masked
    feature's values withheld."""
    items = []
    for n, item in enumerate(result.counterfactuals):
        changes = {}
        for name, change in item["changes"].items():
            if name in masked:
                changes[name] = {"from": None, "to": None, WITHHELD: True}
            else:
                changes[name] = {"from": change["from"], "to": change["to"]}
        items.append(
            {
                "rank": n + 1,
                "sentence": sentence(schema, item["changes"], masked),
                "changes": changes,
                "features_changed": [f.name for f in schema.features if f.name in changes],
                "prediction": item["prediction"],
                "score": item["score"],
                "sparsity": item["sparsity"],
                "distance": item["distance"],
                "plausibility": item["plausibility"],
            }
        )
    return items


def nearest(items: list[dict]) -> dict | None:
    """The counterfactual closest to the decision (the smallest distance; fewest changes
    first on a tie): the one a notice carries."""
    if not items:
        return None
    return min(items, key=lambda c: (c["distance"], c["sparsity"], c["rank"]))


def counterfactuals_json(decision, masked: Collection[str] = ()) -> dict:
    """GET /api/v1/decisions/{id}/counterfactuals: the work's status, and the newest stored
    result's fields beside it (None, and no counterfactuals, before there is one)."""
    version = decision.model_version
    schema = version.parsed_schema
    adverse = (
        schema.target.favourable_class is not None
        and schema.target.is_adverse(decision.prediction) is True
    )
    work = work_of(decision)
    result = work.result if work else None
    body: dict[str, Any] = {
        "decision_id": decision.pk,
        "status": status_of(decision, work, adverse),
        "policy": version.counterfactual_policy,
        "error": (work.error or None) if work else None,
        "requested_by": _username(work.requested_by) if work else None,
        "counterfactuals": [],
        "nearest": None,
        **dict.fromkeys(RESULT_FIELDS),
    }
    if result is None:
        return body
    items = shown(schema, result, masked)
    config = result.config
    near = nearest(items)
    body.update(
        {
            "result_id": result.pk,
            "computed_at": result.computed_at,
            "requested_by": _username(result.requested_by) or body["requested_by"],
            "method": config.method,
            "method_version": config.method_version,
            "library_versions": config.library_versions,
            "config": config.content,
            "config_id": config.pk,
            "seed": result.seed,
            "goal": result.document.get("goal"),
            "original": _original(result.document.get("original") or {}),
            "quality": result.quality,
            "note": result.document.get("note") or None,
            "error": result.error or body["error"],
            "counterfactuals": items,
            "nearest": near["rank"] if near else None,
            "duration_ms": result.duration_ms,
        }
    )
    return body


# A result's fields in the API's answer: None until one is stored.
RESULT_FIELDS = (
    "result_id",
    "computed_at",
    "method",
    "method_version",
    "library_versions",
    "config",
    "config_id",
    "seed",
    "goal",
    "original",
    "quality",
    "note",
    "duration_ms",
)


def _original(original: dict) -> dict:
    return {k: original.get(k) for k in ("prediction", "score", "favourable", "plausibility")}


def _username(user) -> str | None:
    return user.get_username() if user is not None else None


def panel(decision, masked: Collection[str] = ()) -> dict:
    """The decision page's section: status, each counterfactual's sentence, the inputs with
    each counterfactual's changes beside them, the quality figures."""
    data = counterfactuals_json(decision, masked)
    schema = decision.model_version.parsed_schema
    items = data["counterfactuals"]
    rows = []
    for feature in schema.features:
        hidden = feature.name in masked
        cells = []
        for item in items:
            change = item["changes"].get(feature.name)
            if change is None:
                cells.append({"changed": False, "text": ""})
            elif hidden:
                cells.append({"changed": True, "text": "changed (withheld)"})
            else:
                cells.append({"changed": True, "text": value_text(feature, change["to"])})
        rows.append(
            {
                "name": feature.name,
                "label": feature.label,
                "value": "withheld"
                if hidden
                else value_text(feature, decision.full_inputs().get(feature.name)),
                "mutable": feature.mutable,
                "cells": cells,
            }
        )
    return {
        "cf": data,
        "cf_items": items,
        "cf_rows": rows,
        "cf_busy": data["status"] == "pending",
        "cf_quality": data["quality"],
    }


def nearest_sentence(decision, masked: Collection[str] = ()) -> str | None:
    """The notice's sentence: the nearest stored counterfactual, or None."""
    work = work_of(decision)
    if work is None or work.result is None:
        return None
    near = nearest(shown(decision.model_version.parsed_schema, work.result, masked))
    return near["sentence"] if near else None
