"""The notice for the person a decision was about (GDPR Art. 15(1)(h), 22; AI Act Art. 86).

It says that an automated model took part, which model version, the outcome in
the schema's words ("declined"), the principal reasons (at most four, as
sentences with the person's values: the features whose SHAP attributions pushed
towards the adverse outcome, largest first, never a protected attribute: Reg B
1002.6(b); the review queue's `protected_reason` rule flags such decisions),
which data was used (feature labels), the right to a human review and how to
ask for it. It carries no raw weights, scores, internal feature codes or ids
beyond a reference.

An adverse decision's notice also carries its nearest counterfactual, once computed
("The application would have been approved if the annual income had been at least
27,000 EUR"; explain/counterfactual_presenters.py builds it for the page and the API
too). The document depends only on the decision, its SHAP explanation and its
counterfactuals (whose seed is the decision's own): no
generation time, no requester. So regenerating it gives the same content hash,
and (see render.py) byte-identical JSON and PDF files.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from auditapp.decisions.models import Decision
from auditapp.decisions.reasons import RAISED, adverse_reasons, effect_phrase
from auditapp.errors import Conflict
from explain.counterfactual_presenters import nearest_sentence
from explain.models import Explanation

DOCUMENT_VERSION = 2  # 2: values in the reasons, outcome in words, right to human review


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
    target = schema.target
    explanation = shap_explanation(decision)
    reasons = adverse_reasons(
        schema,
        explanation.attributions,
        decision.full_inputs(),
        skip_protected=True,
        erased=decision.erased,
    )
    towards = effect_phrase(target, RAISED)
    reference = notice_reference(decision)
    document = {
        "attest_document": "decision_notice",
        "document_version": DOCUMENT_VERSION,
        "reference": reference,
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
        "outcome": target.outcome_text(decision.prediction),
        "reasons_heading": (
            "The principal reasons for this outcome, with the information we used, "
            "most important first"
            if target.is_adverse(decision.prediction) is not False
            else f"The factors that {towards} all the same, with the information we used, "
            "most important first"
        ),
        "reasons": [
            {
                "rank": rank,
                "factor": reason.label,
                "value": reason.shown_value,
                "direction": towards,
                "text": reason.plain,
            }
            for rank, reason in enumerate(reasons, start=1)
        ],
        "data_used": [feature.label for feature in schema.features],
        "explanation_method": "SHAP (Shapley additive explanations) computed for this decision",
        "human_review": (
            "You have the right to have this decision reviewed by a person, who can change "
            f"it, to give your point of view and to contest it. To ask for it, quote the "
            f"reference {reference}."
        ),
        "contest": settings.ATTEST_CONTEST_TEXT,
    }
    # An adverse decision's nearest stored counterfactual, in plain words (the person's own
    # values: nothing masked). Absent until its counterfactuals are computed; a
    # recomputation reproduces it (same seed), so the notice's hash stays.
    change = nearest_sentence(decision) if target.is_adverse(decision.prediction) else None
    if change:
        document["what_would_change"] = change
    return document
