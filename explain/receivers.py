"""The explanation app's part in what other apps do: the self-test of a version being
registered, and the work rows of decisions just recorded."""

from __future__ import annotations

from django.dispatch import receiver

from auditapp.decisions.signals import decisions_recorded
from auditapp.errors import InvalidInput
from auditapp.registry.signals import version_checking
from explain import counterfactual_work
from explain.engine import ModelContext
from explain.selftest import APPROXIMATE_OPTIONS, run_self_test
from explain.services import add_pending_explanations


@receiver(version_checking, dispatch_uid="explain-self-test")
def self_test_version(
    sender, *, model, schema, background, rows, background_sha256, artifact_sha256, settings, **_
):
    """Refuse a version whose SHAP explanations do not add up to its own outputs,
    unless its owner accepts approximate explanations (then warn wherever it shows)."""
    context = ModelContext(
        model=model,
        schema=schema,
        background=background,
        background_sha256=background_sha256,
        artifact_sha256=artifact_sha256,
    )
    figures = run_self_test(context, rows)
    if not figures["passed"] and settings.get("allow_approximate"):
        # Accepted approximate: the model-agnostic explainer, additive by construction,
        # explains this version instead (explain.explainers reads this record).
        figures["approximate"] = run_self_test(context, rows, APPROXIMATE_OPTIONS)
    if not figures["passed"] and not figures.get("approximate", {}).get("passed"):
        cause = figures["cause"]
        if "approximate" in figures:
            cause += f"; the model-agnostic explainer failed too: {figures['approximate']['cause']}"
        raise InvalidInput(
            f"The explanation self-test failed: {cause}. Attest does not certify "
            "explanations that contradict the model; with a background sample, register "
            'with explain {"allow_approximate": true} to have it explained by the '
            "model-agnostic explainer instead, with a visible warning.",
            code="explanations_do_not_add_up",
            details=figures,
        )
    return {"key": "shap", "figures": figures}


@receiver(decisions_recorded, dispatch_uid="explain-pending-rows")
def add_work_rows(sender, *, decisions, recorded_at, predictions=None, **_):
    """Their work rows are written with the decisions, and the work sent once they commit:
    explanations, and the counterfactuals of adverse decisions the version's policy selects."""
    add_pending_explanations(decisions, recorded_at)
    if predictions is not None:
        counterfactual_work.add_pending(decisions, predictions, recorded_at)
