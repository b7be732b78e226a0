"""Which decisions go to the review queue, and why. Pure rules over plain attributes.

- a score within a band around the decision threshold (the model was unsure);
- the explanation failed, or SHAP failed its additivity check;
- SHAP and LIME disagree, judged only where LIME's local fit is evidence: ranks
  of |attribution| that do not correlate, or (if a version asks) too few top
  features in common (thresholds per model version, see agreement_settings);
- a domain expert disagreed with the decision (see services.submit_feedback);
- a protected attribute is among the principal reasons of an adverse decision:
  its notice must leave it out (Reg B 1002.6(b)), and a person should look at why
  the model leaned on it.
"""

from __future__ import annotations

from django.conf import settings

from auditapp.decisions.reasons import protected_among_reasons
from auditapp.registry.agreement import judge_agreement
from auditapp.registry.models import AGREEMENT_DEFAULTS, agreement_settings  # noqa: F401

SCORE_NEAR_THRESHOLD = "score_near_threshold"
EXPLANATION_FAILED = "explanation_failed"
ADDITIVITY_FAILED = "additivity_failed"
METHODS_DISAGREE = "shap_lime_disagree"
SCORE_MISMATCH = "score_not_the_models"
EXPERT_DISAGREES = "expert_disagrees"
FLAGGED = "flagged"
PROTECTED_REASON = "protected_reason"
# The reasons people give (a case keeps each person's words); the others, the rules' own.
PERSONAL = frozenset({EXPERT_DISAGREES, FLAGGED})
RULE_LABELS = {
    SCORE_NEAR_THRESHOLD: "score close to the decision threshold",
    EXPLANATION_FAILED: "the explanation failed",
    ADDITIVITY_FAILED: "SHAP values do not add up",
    METHODS_DISAGREE: "SHAP and LIME disagree",
    SCORE_MISMATCH: "the recorded score is not the registered model's",
    EXPERT_DISAGREES: "a domain expert disagreed",
    FLAGGED: "flagged by hand",
    PROTECTED_REASON: "a protected attribute is among the main reasons",
}
# How urgent each rule's case is (higher first); the queue orders by the most severe
# rule of a case (then the score's distance to the threshold, then age). A recorded
# score the registered model does not give, and a person's doubt, come before what the
# explainers found about themselves; the score band, which catches the most cases,
# comes last. Numbers, not positions: each case stores its severity, so a new rule takes
# a free number and no stored case changes rank. A rule not listed ranks below all.
SEVERITY = {
    SCORE_MISMATCH: 80,
    # An adverse decision that leans on a protected attribute is a possible prohibited
    # basis (ECOA, Reg B): a person must look before any notice goes out.
    PROTECTED_REASON: 70,
    EXPERT_DISAGREES: 60,
    FLAGGED: 50,
    ADDITIVITY_FAILED: 40,
    EXPLANATION_FAILED: 30,
    METHODS_DISAGREE: 20,
    SCORE_NEAR_THRESHOLD: 10,
}


def severity(reasons: list[dict]) -> int:
    """A case's severity: its most severe rule's (higher is more urgent; 0 for none known)."""
    return max((SEVERITY.get(r["rule"], 0) for r in reasons), default=0)


# How SHAP-LIME agreement is judged unless a model version says otherwise
# (registration's `explain.agreement`, stored in ModelVersion.explain_settings).
# Measured on the demo credit GBM (2,000 decisions) and a GBM on Adult (3,000);
# README, Explanations:
# - min_fidelity: LIME's surrogate must explain at least half of the model's
#   local variation (R² ≥ 0.5, what the decision page calls a good fit); below
#   that its weights describe a linear caricature, and disagreeing with SHAP is
#   no evidence that either is wrong;
# - min_rank_correlation: Spearman's correlation of |attribution| over all raw
#   features at least 0.3. Honest explanations measured 0.43 or more in 95 % of
#   decisions; LIME weights shuffled at random fall below 0.3 81-85 % of the time;
# - min_top_k_overlap: off (0). The top 3 is a coarse figure: on Adult, 36 of
#   3,000 decisions share none of their top 3 features while their rank
#   correlation is a median 0.6, and requiring even 1 shared doubled the cases
#   while catching 0-2 % more shuffled explanations. A version can ask for it.


def reason(rule: str, detail: str = "") -> dict:
    return {"rule": rule, "detail": detail}


def score_reasons(score: float | None) -> list[dict]:
    threshold = settings.ATTEST_REVIEW_THRESHOLD
    band = settings.ATTEST_REVIEW_SCORE_BAND
    if score is None or abs(score - threshold) > band:
        return []
    return [reason(SCORE_NEAR_THRESHOLD, f"score {score:.3f}, threshold {threshold} ± {band}")]


def explanation_reasons(explanation, agreement: dict | None = None) -> list[dict]:
    """Reasons an explanation (an Explanation row) gives to review its decision.

    `agreement` is the version's agreement thresholds (agreement_settings);
    the defaults when not given.
    """
    if explanation.status == "failed":
        return [reason(EXPLANATION_FAILED, f"{explanation.method}: {explanation.error[:200]}")]
    if explanation.status != "done":
        return []
    quality = explanation.quality or {}
    found = []
    if explanation.method == "shap" and quality.get("additivity_ok") is False:
        found.append(reason(ADDITIVITY_FAILED, f"error {quality.get('additivity_error'):.3g}"))
    if explanation.method == "shap" and quality.get("score_ok") is False:
        found.append(
            reason(
                SCORE_MISMATCH,
                f"recorded {quality['recorded_score']:.4f}, the registered model gives "
                f"{quality['model_score']:.4f} (tolerance {quality['score_tolerance']:g})",
            )
        )
    figures = quality.get("agreement_with_shap")
    if figures:
        verdict = judge_agreement(
            figures, quality.get("fidelity_r2"), agreement or AGREEMENT_DEFAULTS
        )
        if verdict["judged"] and not verdict["agrees"]:
            found.append(reason(METHODS_DISAGREE, verdict["why"]))
    return found


def protected_reasons(schema, prediction, attributions: dict | None) -> list[dict]:
    """A protected attribute among the principal reasons (at most four) of an adverse
    decision (or a regression's, where nothing says which is adverse)."""
    if not attributions or schema.target.is_adverse(prediction) is False:
        return []
    names = protected_among_reasons(schema, attributions)
    if not names:
        return []
    labels = {f.name: f.label for f in schema.features}
    return [
        reason(
            PROTECTED_REASON,
            f"{', '.join(labels[n] for n in names)} among the main reasons for "
            f"“{prediction}”; its notice leaves {'it' if len(names) == 1 else 'them'} out",
        )
    ]
