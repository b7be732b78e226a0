"""The verdict on SHAP-LIME agreement under a version's thresholds (agreement_settings).

The explanation workers judge each pair when they store it, and the review
rules read the verdict: both apps use this one rule, which belongs to the
version's explanation settings, below them both.
"""

from __future__ import annotations

import math


def _needed(share: float, k: int) -> int:
    """How many of the top k features a share asks for (1/3 of 3 is 1, not 0.999…)."""
    return math.ceil(share * k - 1e-9)


def _versus(value: float, limit: float) -> str:
    """A figure to two decimals, or to four where two would make it look equal to its limit."""
    text = f"{value:.2f}"
    return f"{value:.4f}" if text == f"{limit:.2f}" and value != limit else text


def judge_agreement(figures: dict, fidelity_r2: float | None, thresholds: dict) -> dict:
    """The verdict on SHAP-LIME agreement figures (engine.agreement) under these thresholds.

    `judged` is false when LIME's own fit is too poor to be evidence, and `why`
    says so; otherwise `agrees` says whether both figures reach their minimum,
    and `why` names the figures and the thresholds either way.
    """
    min_fidelity = thresholds["min_fidelity"]
    verdict = {"fidelity_r2": fidelity_r2, "min_fidelity": min_fidelity}
    if fidelity_r2 is None or not fidelity_r2 >= min_fidelity:
        why = (
            "not judged: LIME recorded no fidelity R²"
            if fidelity_r2 is None
            else "not judged: LIME's local fit is too poor to be evidence "
            f"(fidelity R² {_versus(fidelity_r2, min_fidelity)} < {min_fidelity:.2f})"
        )
        return {**verdict, "judged": False, "agrees": None, "why": why}
    k, correlation = figures["top_k"], figures.get("rank_correlation")
    shared = round(figures["top_k_overlap"] * k)
    needed = _needed(thresholds["min_top_k_overlap"], k)
    min_correlation = thresholds["min_rank_correlation"]
    agrees = shared >= needed and (correlation is None or correlation >= min_correlation)
    rank = "n/a" if correlation is None else _versus(correlation, min_correlation)
    return {
        **verdict,
        "judged": True,
        "agrees": agrees,
        "min_top_k_shared": needed,
        "min_rank_correlation": min_correlation,
        "why": (
            f"{shared} of the top {k} shared" + (f" (minimum {needed})" if needed else "") + ", "
            f"rank correlation {rank} (minimum {min_correlation:.2f}), "
            f"LIME fidelity R² {_versus(fidelity_r2, min_fidelity)} ≥ {min_fidelity:.2f}"
        ),
    }
