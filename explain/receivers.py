"""The explanation app's part in what other apps do: the self-test of a version being
registered, and sending the work of decisions just recorded."""

from __future__ import annotations

from django.dispatch import receiver

from auditapp.decisions.signals import explanations_pending
from auditapp.errors import InvalidInput
from auditapp.registry.signals import version_checking
from explain.engine import ModelContext
from explain.publishing import enqueue_batches, enqueue_soon
from explain.selftest import APPROXIMATE_OPTIONS, run_self_test


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


@receiver(explanations_pending, dispatch_uid="explain-send-pending")
def send_pending(sender, *, pending, priority=False, **_):
    """A request waiting (priority) is sent at once, on its own queue, with a new seed;
    decisions just recorded go to the publisher thread, not to wait for the broker."""
    if priority:
        enqueue_batches(pending, priority=True, new_seed=True)
    else:
        enqueue_soon(pending)
