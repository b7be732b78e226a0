"""Reasons for a decision, in plain words, from its SHAP attributions.

The reasons are the features whose attributions pushed the decision toward
the adverse outcome (the schema's target says which: its `favourable` class,
else the positive class is the adverse one, e.g. "bad" credit), largest first,
at most four (US Reg B 1002.9(b)(2); see ../shared/COMPLIANCE.md). Each is one
sentence with the person's value, formatted per the schema:
"Previous defaults = 2 — raised the risk of “bad” (+0.76)". The decision page,
the API, the notice and its PDF all take their sentences from here.

What may not be shown is never named: a feature withheld from the reader
(masked for their role) is left out before ranking, so neither its value nor
its rank shows; a notice also leaves out protected attributes (Reg B 1002.6(b)).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from explain.schema import Feature, Schema, Target

MAX_REASONS = 4
# A feature is a reason only if its push is at least this share of the decision's total
# |attribution|: a model that barely used a feature (e.g. "Sex (+0.0004)") did not decide
# on it, and a notice or the review queue should not say it did.
MIN_SHARE = 0.01
RAISED, LOWERED = "raised", "lowered"


@dataclass(frozen=True)
class Reason:
    feature: str
    label: str
    attribution: float  # the stored SHAP attribution (towards the positive class)
    value: Any  # the person's raw input
    shown_value: str  # the value formatted for people
    direction: str  # RAISED or LOWERED: which way it moved the adverse outcome
    plain: str  # the sentence without the figure, for the person's notice (no raw weights)
    text: str  # the sentence with its contribution, for the page and the API
    protected: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "value": self.value,
            "direction": self.direction,
            "contribution": self.attribution,
            "text": self.text,
        }


def effect_phrase(target: Target, direction: str) -> str:
    """ "raised the risk of “bad”", or, for a regression, "raised the predicted value"."""
    if target.type != "classification":
        return f"{direction} the predicted value"
    return f"{direction} the risk of “{target.adverse_name}”"


ERASED = "erased"


def reason_for(
    feature: Feature, value: Any, attribution: float, target: Target, *, erased: bool = False
) -> Reason:
    """`erased`: the decision's inputs were erased; its value is unknown, not "not given"
    (as a missing value reads), and the sentence says so."""
    towards_adverse = attribution * target.adverse_sign
    direction = RAISED if towards_adverse > 0 else LOWERED
    shown = ERASED if erased else feature.format_value(value)
    said = f"{feature.label} (its value erased)" if erased else f"{feature.label} = {shown}"
    plain = f"{said} — {effect_phrase(target, direction)}"
    return Reason(
        feature=feature.name,
        label=feature.label,
        attribution=attribution,
        value=value,
        shown_value=shown,
        direction=direction,
        plain=plain,
        text=f"{plain} ({_figure(towards_adverse)})",
        protected=feature.protected,
    )


def _figure(value: float) -> str:
    """+0.76; a small push keeps two significant digits (+0.0042), never "+0.00"."""
    return f"{value:+.2f}" if abs(value) >= 0.005 else f"{value:+.2g}"


def adverse_reasons(
    schema: Schema,
    attributions: Mapping[str, float],
    inputs: Mapping[str, Any],
    *,
    withheld: Collection[str] = (),
    skip_protected: bool = False,
    limit: int = MAX_REASONS,
    erased: bool = False,
) -> list[Reason]:
    """The features that pushed towards the adverse outcome, largest first; a push below
    MIN_SHARE of the total is no reason.

    `withheld` (masked for the reader) are left out before ranking; so are protected
    attributes when `skip_protected` (a notice).
    """
    left_out = set(withheld)
    if skip_protected:
        left_out |= {f.name for f in schema.features if f.protected}
    features = {f.name: f for f in schema.features}
    return [
        reason_for(features[name], inputs.get(name), value, schema.target, erased=erased)
        for name, value in _pushing(schema, attributions, left_out, limit)
    ]


def _pushing(
    schema: Schema, attributions: Mapping[str, float], left_out: Collection[str], limit: int
) -> list[tuple[str, float]]:
    """(feature, attribution) of the `limit` largest pushes towards the adverse outcome."""
    sign = schema.target.adverse_sign
    floor = MIN_SHARE * sum(abs(v) for v in attributions.values())
    names = set(schema.names)
    pushing = sorted(
        (
            (name, value)
            for name, value in attributions.items()
            if value * sign > 0 and abs(value) >= floor and name in names and name not in left_out
        ),
        key=lambda item: (-item[1] * sign, item[0]),
    )
    return pushing[:limit]


def protected_among_reasons(
    schema: Schema, attributions: Mapping[str, float], limit: int = MAX_REASONS
) -> list[str]:
    """The protected attributes among the principal reasons (before a notice skips them).

    Called for every SHAP result a worker stores: a schema with no protected attribute
    answers at once, and no reason is worded."""
    protected = {f.name for f in schema.features if f.protected}
    if not protected:
        return []
    return [name for name, _ in _pushing(schema, attributions, (), limit) if name in protected]


def protected_inputs(schema: Schema) -> list[Feature]:
    """Protected attributes the model takes as inputs: every schema feature is a column of
    the frame the model receives (Schema.frame), so each protected one is an input."""
    return [f for f in schema.features if f.protected]


def protected_input_warning(schema: Schema) -> str | None:
    """The standing warning of a version that uses protected attributes (its pages, the
    compliance report); None when it uses none."""
    features = protected_inputs(schema)
    if not features:
        return None
    return (
        f"This model takes protected attributes as inputs: {', '.join(f.label for f in features)}. "
        "A decision must not rest on them (ECOA / Reg B 1002.6(b); EU AI Act Art. 10(5)): "
        "notices never cite them, and a decision where one is among the principal reasons "
        "is queued for review (rule protected_reason)."
    )
