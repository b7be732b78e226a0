"""Every threshold monitoring judges by, defined once, each with the reason for its value.

The metrics (`drifted`, `four_fifths_ok`), the default alert rules and their names, the
chart titles and the templates (through the `monitoring_thresholds` template tag) all
read these, so changing one changes every place that states or applies it. Alert rules
copy their threshold when created: a rule a user edits keeps its own.
"""

from __future__ import annotations

# PSI above this is a significant shift: the usual reading of PSI (below 0.1 stable,
# 0.1 to 0.25 moderate, above 0.25 major), taken at the start of "moderate to major".
PSI_SHIFT = 0.2
# A drifted feature must also fail its test (KS or chi-squared) at the 5 % level, so a
# large PSI from a handful of decisions is not called drift.
DRIFT_P_VALUE = 0.05
# The four-fifths rule (US EEOC Uniform Guidelines): a group selected at less than 80 %
# of the most selected group's rate shows adverse impact.
FOUR_FIFTHS = 0.8
# A ROC AUC this far below the reference's is more than a window's sampling noise on a
# few hundred outcomes, and is what model-risk reviews usually ask to be told about.
ROC_AUC_DROP = 0.05
# More than 1 % of explanations failing is a broken explainer, not an unlucky decision.
EXPLANATION_FAILURE_RATE = 0.01


def as_context() -> dict[str, float]:
    """The thresholds by name, for templates (read at call time, so a change shows)."""
    return {
        "psi_shift": PSI_SHIFT,
        "drift_p_value": DRIFT_P_VALUE,
        "four_fifths": FOUR_FIFTHS,
        "roc_auc_drop": ROC_AUC_DROP,
        "explanation_failure_rate": EXPLANATION_FAILURE_RATE,
    }
