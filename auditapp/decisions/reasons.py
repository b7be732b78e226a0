"""Reasons for a decision, in plain words, from its SHAP attributions.

The reasons are the features whose attributions pushed the decision toward
the schema's positive class (the adverse outcome, e.g. "bad" credit), largest
first, at most four (US Reg B 1002.9(b)(2); see ../shared/COMPLIANCE.md).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_REASONS = 4


@dataclass(frozen=True)
class Reason:
    feature: str
    label: str
    attribution: float


def adverse_reasons(
    attributions: dict[str, float], labels: dict[str, str], limit: int = MAX_REASONS
) -> list[Reason]:
    pushing = sorted(
        ((name, value) for name, value in attributions.items() if value > 0),
        key=lambda item: (-item[1], item[0]),
    )
    return [Reason(name, labels.get(name, name), value) for name, value in pushing[:limit]]
