"""What-if: a decision's inputs edited, run through its model version and explained at once.

A reviewer changes some inputs of a recorded decision and sees the model's new
prediction, score and SHAP attributions beside the original's. Nothing is stored
but one audit event (`decision.what_if`: who tried which changes on which
decision): no decision, no explanation row, nothing monitoring reads.

- The edits are merged over the decision's inputs and the result is checked
  against the version's schema as ingestion checks it (`Schema.input_errors`:
  the same `{"field": "inputs.<name>", "message"}` errors).
- A feature masked from the actor (sensitive, without `view_sensitive`) is never
  taken from the decision: probing the model with the hidden value would tell it.
  The actor must supply a value for each; the original's attributions of those
  features are withheld as everywhere else (`explain.presenters`), and whether a
  supplied value equals the hidden one is said nowhere (not in the answer, not in
  the event).
- The model and its explainer come from the per-process cache the workers use
  (`explain.explainers.cached_explainer`); the prediction is the model's own
  `predict()`, the score its probability of the positive class (a regression's
  score is its prediction), as `explain.background` defines them; SHAP is the
  version's configured explainer and its additivity is checked against the
  pipeline's own output, as the workers check it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.decisions.erasure import refuse_erased
from auditapp.decisions.models import Decision
from auditapp.decisions.presenters import MASK, DecisionPresenter
from auditapp.errors import InvalidInput, ServiceError
from auditapp.tasking import TRANSIENT_ERRORS
from explain import engine
from explain.batches import default_seed
from explain.explainers import cached_explainer
from explain.frames import input_frame

log = logging.getLogger(__name__)

ACTION = "decision.what_if"
FIELDS = frozenset({"inputs"})
HIDDEN = "is hidden from you (sensitive): supply a value to try one"


class NotExplainable(ServiceError):
    """The version's model or explainer cannot be used (the workers' rows fail alike)."""

    status = 422
    code = "not_explainable"


@dataclass
class Side:
    """One side of the comparison: the model's answer on one row, and its SHAP."""

    inputs: dict[str, Any]
    prediction: Any
    score: float | None
    shap: engine.ExplanationResult


@dataclass
class WhatIf:
    decision: Decision
    masked: list[str]  # the original's features the actor may not see
    edits: dict[str, Any]  # what the actor sent
    changed: list[str]  # features whose value differs from the original's (never a masked one)
    supplied_masked: list[str]  # masked features the actor gave a value for
    what_if: Side
    original: Side

    def as_json(self) -> dict:
        decision, schema = self.decision, self.decision.model_version.parsed_schema
        masked = set(self.masked)
        return {
            "decision": decision.pk,
            "model": decision.registered_model.name,
            "version": decision.model_version.version,
            "inputs": self.what_if.inputs,
            "changed": self.changed,
            "supplied_masked": self.supplied_masked,
            "prediction": self.what_if.prediction,
            "score": self.what_if.score,
            "explanation": {"shap": shap_json(self.what_if.shap, schema)},
            "original": {
                # As recorded (what the person was told), and the model's own answer on the
                # recorded inputs now, for a like-for-like comparison.
                "prediction": decision.prediction,
                "score": decision.score,
                "model_prediction": self.original.prediction,
                "model_score": self.original.score,
                "inputs": {
                    k: (MASK if k in masked else v) for k, v in decision.full_inputs().items()
                },
                "masked_features": self.masked,
                "explanation": {"shap": shap_json(self.original.shap, schema, masked)},
            },
        }


def shap_json(result: engine.ExplanationResult, schema, masked: set[str] | None = None) -> dict:
    """A live SHAP result as the API shows it: attributions in schema order with their
    features' labels; a masked feature's attribution withheld (null), as stored ones are."""
    masked = masked or set()
    if not result.ok:
        return {"error": result.error}
    return {
        "explainer": result.explainer,
        "library_version": result.library_version,
        "output_space": result.output_space,
        "base_value": result.base_value,
        "attributions": {
            name: (None if name in masked else result.attributions.get(name))
            for name in schema.names
        },
        "labels": {f.name: f.label for f in schema.features},
        "top_features": [name for name in result.top_features if name not in masked],
        "quality": {
            key: result.quality[key]
            for key in ("additivity_ok", "additivity_error", "additivity_tolerance")
            if key in result.quality
        },
    }


def parse_edits(payload: Any) -> dict[str, Any]:
    """The body's `inputs`: a non-empty object of feature values (checked by the schema)."""
    if not isinstance(payload, Mapping):
        raise InvalidInput('The body must be an object: {"inputs": {"<feature>": <value>, ...}}.')
    unknown = sorted(str(k) for k in payload if k not in FIELDS)
    if unknown:
        raise InvalidInput(
            "The body has fields a what-if does not take.",
            details=[{"field": name, "message": "is not a what-if field"} for name in unknown],
        )
    edits = payload.get("inputs")
    if not isinstance(edits, Mapping):
        raise InvalidInput(
            '"inputs" is required: an object of the features to change and their new values.',
            details=[{"field": "inputs", "message": "must be an object"}],
        )
    if not edits:
        raise InvalidInput(
            '"inputs" is empty: name at least one feature to change.',
            details=[{"field": "inputs", "message": "is empty"}],
        )
    return dict(edits)


def merged_inputs(
    decision: Decision, edits: dict[str, Any], masked: list[str]
) -> tuple[dict[str, Any], list[dict]]:
    """The decision's inputs with the edits over them, and the schema's errors on the result.

    A masked feature's recorded value is left out before merging, never read: unless the
    actor supplied one, the feature is missing and named so.
    """
    schema = decision.model_version.parsed_schema
    hidden = set(masked)
    merged = {k: v for k, v in decision.full_inputs().items() if k not in hidden}
    merged.update(edits)
    errors = []
    for path, message in schema.input_errors(merged):
        name = path.removeprefix("inputs.")
        if name in hidden and name not in edits and message == "is missing":
            message = HIDDEN
        errors.append({"field": path, "message": message})
    return merged, errors


def run_what_if(
    actor: roles.Actor, decision: Decision, payload: Any, *, ip=None, via: str = "api"
) -> WhatIf:
    """Check the edits, run the model and SHAP on the edited and the original inputs, and
    record the audit event. Raises InvalidInput naming each bad field."""
    actor.require(roles.WHAT_IF)
    refuse_erased(decision, "a what-if")
    edits = parse_edits(payload)
    masked = DecisionPresenter(actor).masked_features(decision)
    merged, errors = merged_inputs(decision, edits, masked)
    if errors:
        raise InvalidInput(
            "The inputs are invalid; nothing was computed.", code="invalid_inputs", details=errors
        )
    model_version = decision.model_version
    try:
        context, explainer = cached_explainer(model_version, "shap")
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        raise NotExplainable(
            f"Model version {model_version.version} cannot be run here: {engine.describe(exc)}"
        ) from exc
    # Both rows in one call: one transform, shared by SHAP and the model's answers, and one
    # TreeSHAP pass. The original is explained on its recorded inputs (as its stored
    # explanation was), with its default seed.
    seed = default_seed(decision.content_hash)
    try:
        frame = input_frame(context.schema, [decision.full_inputs(), merged])
        transformed = explainer.model_input(frame)
        original_shap, what_if_shap = explainer.explain(frame, [seed, seed], transformed)
        predictions, scores = model_answers(context, explainer.estimator, transformed)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        # The library's message may quote an input, and the original row holds values the
        # actor may not see: its type only, the rest to the server's log.
        log.exception("what_if.failed decision=%s", decision.pk)
        raise NotExplainable(
            f"The model could not be run on these inputs ({type(exc).__name__}); "
            "the server's log has the details."
        ) from exc
    hidden = set(masked)
    changed = [
        name
        for name in model_version.parsed_schema.names
        if name in edits
        and name not in hidden
        and not _same(edits[name], decision.full_inputs().get(name))
    ]
    supplied_masked = [name for name in masked if name in edits]
    result = WhatIf(
        decision=decision,
        masked=masked,
        edits=edits,
        changed=changed,
        supplied_masked=supplied_masked,
        what_if=Side(merged, predictions[1], scores[1], what_if_shap),
        original=Side(decision.full_inputs(), predictions[0], scores[0], original_shap),
    )
    _record(actor, result, ip=ip, via=via)
    return result


def model_answers(context: engine.ModelContext, estimator, transformed) -> tuple[list, list]:
    """The model's prediction and score on each row, as ingestion and monitoring take them:
    `predict()`, and the probability of the positive class (a regression: its prediction).

    A pipeline's predict and predict_proba are its preprocessing's transform followed by
    the final estimator's method: `transformed` is the rows through the preprocessing
    once, as the explainer took them (ShapExplainer.model_input), the estimator its final
    step. On a one-hot pipeline the transform is most of a what-if's time.
    """
    predictions = [_plain(p) for p in estimator.predict(transformed)]
    if not context.is_classifier:
        return predictions, [float(p) for p in predictions]
    if not hasattr(estimator, "predict_proba"):
        return predictions, [None] * len(predictions)
    probabilities = estimator.predict_proba(transformed)[:, context.positive_index()]
    return predictions, [float(p) for p in probabilities]


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _same(a: Any, b: Any) -> bool:
    """Equal values of one schema type (1 and 1.0 alike; True never 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _record(actor: roles.Actor, result: WhatIf, *, ip, via: str) -> None:
    """`decision.what_if`: the changes, from and to. A sensitive feature's values go to the
    event's sensitive details (read with `view_sensitive` only), and a value the actor may
    not see is not recorded at all: a masked feature is "supplied", never "changed"."""
    decision = result.decision
    sensitive = decision.model_version.parsed_schema.sensitive_names
    changes, withheld = [], {}
    for name in result.changed:
        before, after = decision.full_inputs().get(name), result.edits[name]
        if name in sensitive:
            changes.append({"feature": name, "from": MASK, "to": MASK})
            withheld[name] = {"from": before, "to": after}
        else:
            changes.append({"feature": name, "from": before, "to": after})
    for name in result.supplied_masked:
        changes.append({"feature": name, "from": MASK, "to": MASK, "supplied": True})
        withheld[name] = {"to": result.edits[name]}
    record_event(
        ACTION,
        actor=actor,
        target=decision,
        ip=ip,
        via=via,
        changes=changes,
        prediction=result.what_if.prediction,
        score=result.what_if.score,
        sensitive_details={"changes": withheld} if withheld else None,
    )
