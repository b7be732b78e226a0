"""Explanations as the API and the decision page show them, masked features withheld."""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from auditapp import charts
from auditapp.registry.artifacts import sha256_hex
from auditapp.registry.models import LIME_GOOD_FIT, LIME_POOR_FIT
from auditapp.registry.services import parse_background
from explain.backends import lime_rules

if TYPE_CHECKING:
    from explain.lime_backend import LimeRules

logger = logging.getLogger(__name__)


def explanation_json(explanation, masked: Collection[str] = ()) -> dict:
    """An explanation; a masked feature's attribution is withheld with its value.

    An attribution is a function of the value (for a linear model it gives the
    value exactly), so whoever may not see the value sees neither its weight, its
    rank nor its LIME rule.
    """
    data = {"status": explanation.status, "attempts": explanation.attempts}
    if explanation.status == explanation.DONE:
        attributions = explanation.attributions
        if masked:
            attributions = {k: (None if k in masked else v) for k, v in attributions.items()}
        data.update(
            explainer=explanation.explainer,
            library_version=explanation.library_version,
            output_space=explanation.output_space,
            base_value=explanation.base_value,
            attributions=attributions,
            top_features=[name for name in explanation.top_features if name not in masked],
            quality=explanation.quality,
            config=explanation.config,
            seed=explanation.seed,
            duration_ms=explanation.duration_ms,
        )
    if explanation.error:
        data["error"] = explanation.error
    return data


def _sigmoid_text(value: float) -> str:
    return f"{1 / (1 + math.exp(-value)):.1%} probability"


def quality_notes(shap, lime) -> list[dict]:
    """Explanation quality in plain words; `warning` marks what a reader must not miss."""
    notes = []
    if shap is not None and shap.status == "done":
        error = shap.quality.get("additivity_error", 0.0)
        if shap.quality.get("additivity_ok"):
            notes.append(
                {
                    "warning": False,
                    "text": f"SHAP values add up to the model's output (difference {error:.1e}).",
                }
            )
        else:
            notes.append(
                {
                    "warning": True,
                    "text": f"SHAP values do not add up to the model's "
                    f"output (difference {error:.2g}): do not rely on this explanation.",
                }
            )
    if lime is not None and lime.status == "done":
        r2 = lime.quality.get("fidelity_r2")
        if r2 is not None:
            fit = (
                "fits well"
                if r2 >= LIME_GOOD_FIT
                else "fits only roughly"
                if r2 >= LIME_POOR_FIT
                else "fits poorly"
            )
            notes.append(
                {
                    "warning": r2 < LIME_POOR_FIT,
                    "text": f"LIME's local approximation {fit} (R² {r2:.2f}).",
                }
            )
        agreement = lime.quality.get("agreement_with_shap")
        if agreement:
            notes.append(agreement_note(agreement))
    return notes


def agreement_note(agreement: dict) -> dict:
    """SHAP-LIME agreement as the worker judged it (registry.agreement.judge_agreement)."""
    if agreement.get("judged") is False:
        return {"warning": False, "text": f"Agreement of SHAP and LIME {agreement['why']}."}
    if agreement.get("judged"):
        if agreement["agrees"]:
            return {"warning": False, "text": f"SHAP and LIME agree: {agreement['why']}."}
        return {
            "warning": True,
            "text": f"SHAP and LIME disagree: {agreement['why']}. Read SHAP (exact) "
            "and review this decision with care.",
        }
    # Figures stored before agreement was judged: shown, without a verdict.
    correlation = agreement.get("rank_correlation")
    return {
        "warning": False,
        "text": f"SHAP and LIME share {round(agreement['top_k_overlap'] * agreement['top_k'])} "
        f"of their top {agreement['top_k']} features"
        + (f" (rank correlation {correlation:.2f})." if correlation is not None else "."),
    }


def value_labels(schema, inputs: Mapping[str, Any], masked: Collection[str] = ()) -> dict:
    """ "Previous defaults = 2" per feature, the value formatted per the schema; a masked
    feature keeps its bare label (its bar is not drawn alone anyway), and so does one
    absent from `inputs` (an erased decision's: its value is unknown, where "= not given"
    said it had never been sent; every recorded decision has every feature, null or not)."""
    return {
        f.name: f.label
        if f.name in masked or f.name not in inputs
        else f"{f.label} = {f.format_value(inputs[f.name])}"
        for f in schema.features
    }


def waterfall_chart(explanation, schema, inputs: Mapping[str, Any], masked: Collection[str] = ()):
    """The SHAP waterfall, bars labelled "feature = value"; masked features are one bar
    together, so it still adds up.

    Their total is no secret: it is the output minus the others' contributions.
    """
    labels = value_labels(schema, inputs, masked)
    contributions = [
        (labels.get(k, k), v) for k, v in explanation.attributions.items() if k not in masked
    ]
    if masked:
        hidden = sum(v for k, v in explanation.attributions.items() if k in masked)
        contributions.append((f"Masked features ({len(masked)})", hidden))
    output = explanation.base_value + sum(explanation.attributions.values())
    space = explanation.output_space.replace("_", "-")
    return charts.waterfall(
        explanation.base_value,
        contributions,
        output,
        title=f"SHAP: how each feature moved the {space} from the base value",
        value_label=space,
        secondary=_sigmoid_text if explanation.output_space == "log_odds" else None,
    )


def lime_chart(
    explanation,
    schema,
    inputs: Mapping[str, Any],
    masked: Collection[str] = (),
    rules: Mapping[str, str] | None = None,
):
    """LIME's weights, each bar labelled with its rule ("Annual income (EUR) ≤ 30,000",
    see lime_rule_texts); a feature without one keeps "feature = value". Masked features
    have no bar: a weight, and its rule even more, tells the value."""
    labels = {**value_labels(schema, inputs, masked), **(rules or {})}
    shown = {k: v for k, v in explanation.attributions.items() if k not in masked}
    items = sorted(shown.items(), key=lambda kv: -abs(kv[1]))
    return charts.bar_chart(
        [(labels.get(k, k), v) for k, v in items],
        title="LIME: local weights (change in probability)",
        value_label="weight",
    )


# The rules of the versions shown lately, by (background, schema) sha256: building one
# reads and parses the version's background.
RULES_CACHE_SIZE = 8
_rules: OrderedDict[tuple[str, str], LimeRules] = OrderedDict()
_rules_lock = threading.Lock()  # a web process may serve pages from several threads


def lime_rule_texts(
    explanation, model_version, inputs: Mapping[str, Any], masked: Collection[str] = ()
) -> dict[str, str]:
    """Each feature's LIME rule on the decision's inputs, as its bar is labelled; none
    for a masked feature (a rule narrows its value down to a quartile).

    A result keeps one weight per feature, not LIME's rule; the rule depends only on
    the background's quartiles and the value, so it is derived here with the
    discretizer the explainer builds (explain.lime_backend.LimeRules). Only for a
    result computed by quartiles over this very background (its configuration says
    so); otherwise, or if the background cannot be read, {}: the bars keep their
    "feature = value" labels.
    """
    config = explanation.config or {}
    if not (
        config.get("discretize_continuous") is True
        and config.get("discretizer") == "quartile"
        and model_version.background
        and config.get("background_sha256") == model_version.background_sha256
    ):
        return {}
    rules = _version_rules(model_version)
    if rules is None:
        return {}
    return {name: rule.text for name, rule in rules.rules(inputs).items() if name not in masked}


def _version_rules(model_version) -> LimeRules | None:
    key = (model_version.background_sha256, model_version.schema_sha256)
    with _rules_lock:
        if key in _rules:
            _rules.move_to_end(key)
            return _rules[key]
    schema = model_version.parsed_schema
    try:
        with model_version.background.open("rb") as handle:
            data = handle.read()
        if sha256_hex(data) != model_version.background_sha256:
            raise ValueError("the background sample changed after registration")
        rules = lime_rules(schema, schema.frame(parse_background(data, schema)))
    except Exception:  # a page keeps its plain labels; the log says why
        logger.exception("LIME rules of model version %s not derived", model_version.pk)
        return None
    with _rules_lock:
        _rules[key] = rules
        while len(_rules) > RULES_CACHE_SIZE:
            _rules.popitem(last=False)
    return rules
