"""Which decisions go to the review queue, and why. Pure rules over plain attributes.

- a score within a band around the decision threshold (the model was unsure);
- the explanation failed, or SHAP failed its additivity check;
- SHAP and LIME disagree (few top features in common);
- a domain expert disagreed with the decision (see services.submit_feedback).
"""

from __future__ import annotations

from django.conf import settings

SCORE_NEAR_THRESHOLD = "score_near_threshold"
EXPLANATION_FAILED = "explanation_failed"
ADDITIVITY_FAILED = "additivity_failed"
METHODS_DISAGREE = "shap_lime_disagree"
EXPERT_DISAGREES = "expert_disagrees"
FLAGGED = "flagged"
RULE_LABELS = {
    SCORE_NEAR_THRESHOLD: "score close to the decision threshold",
    EXPLANATION_FAILED: "the explanation failed",
    ADDITIVITY_FAILED: "SHAP values do not add up",
    METHODS_DISAGREE: "SHAP and LIME disagree",
    EXPERT_DISAGREES: "a domain expert disagreed",
    FLAGGED: "flagged by hand",
}
AGREEMENT_THRESHOLD = 2 / 3  # share of the top features SHAP and LIME must have in common


def reason(rule: str, detail: str = "") -> dict:
    return {"rule": rule, "detail": detail}


def score_reasons(score: float | None) -> list[dict]:
    threshold = settings.ATTEST_REVIEW_THRESHOLD
    band = settings.ATTEST_REVIEW_SCORE_BAND
    if score is None or abs(score - threshold) > band:
        return []
    return [reason(SCORE_NEAR_THRESHOLD, f"score {score:.3f}, threshold {threshold} ± {band}")]


def explanation_reasons(explanation) -> list[dict]:
    """Reasons an explanation (an Explanation row) gives to review its decision."""
    if explanation.status == "failed":
        return [reason(EXPLANATION_FAILED, f"{explanation.method}: {explanation.error[:200]}")]
    if explanation.status != "done":
        return []
    quality = explanation.quality or {}
    found = []
    if explanation.method == "shap" and quality.get("additivity_ok") is False:
        found.append(reason(ADDITIVITY_FAILED, f"error {quality.get('additivity_error'):.3g}"))
    agreement = quality.get("agreement_with_shap")
    if agreement and agreement["top_k_overlap"] < AGREEMENT_THRESHOLD:
        shared = round(agreement["top_k_overlap"] * agreement["top_k"])
        found.append(reason(METHODS_DISAGREE, f"{shared} of the top {agreement['top_k']} shared"))
    return found
