"""The notice for the person a decision was about (GDPR Art. 15(1)(h), 22; AI Act Art. 86).

It says that an automated model took part, which model version, the outcome,
the main reasons (at most four, plain labels, with their direction: the
features whose SHAP attributions pushed towards the adverse class, largest
first), which data was used (feature labels) and how to contest. It carries no
raw weights, scores, internal feature codes or ids beyond a reference.

The document depends only on the decision and its SHAP explanation: no
generation time, no requester. So regenerating it gives the same content hash,
and (see render.py) byte-identical JSON and PDF files.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from auditapp.decisions.models import Decision
from auditapp.decisions.reasons import adverse_reasons
from auditapp.errors import Conflict
from explain.models import Explanation

DOCUMENT_VERSION = 1


def notice_reference(decision: Decision) -> str:
    """The one identifier on the notice: what the person quotes to contest."""
    return f"D-{decision.pk:08d}"


def shap_explanation(decision: Decision) -> Explanation:
    """The decision's finished SHAP explanation; a notice needs its reasons."""
    explanation = decision.explanations.with_results().filter(method="shap").first()
    if explanation is None or explanation.status != Explanation.DONE:
        status = explanation.status if explanation else "missing"
        raise Conflict(
            f"Decision {decision.pk} has no finished SHAP explanation yet (status: {status}); "
            "its notice can be generated once it is explained.",
            code="not_explained",
        )
    return explanation


def build_notice_document(decision: Decision) -> dict[str, Any]:
    version = decision.model_version
    schema = version.parsed_schema
    labels = {f.name: f.label for f in schema.features}
    explanation = shap_explanation(decision)
    positive = schema.target.positive_class
    reasons = adverse_reasons(explanation.attributions, labels)
    towards = f"towards the outcome “{positive}”" if positive is not None else "upwards"
    return {
        "attest_document": "decision_notice",
        "document_version": DOCUMENT_VERSION,
        "reference": notice_reference(decision),
        "decided_on": decision.predicted_at.date().isoformat(),
        "automated_decision": True,
        "statement": (
            "An automated model took part in this decision. It is recorded, with the exact "
            "model version and the information it used, in a tamper-evident audit trail."
        ),
        "model": {
            "name": version.registered_model.name,
            "version": version.version,
            "purpose": version.registered_model.description or version.description,
        },
        "outcome": decision.prediction,
        "reasons_heading": f"The main factors that pushed the decision {towards}, "
        "most important first",
        "reasons": [
            {"rank": rank, "factor": reason.label, "direction": f"pushed {towards}"}
            for rank, reason in enumerate(reasons, start=1)
        ],
        "data_used": [feature.label for feature in schema.features],
        "explanation_method": "SHAP (Shapley additive explanations) computed for this decision",
        "contest": settings.ATTEST_CONTEST_TEXT,
    }
