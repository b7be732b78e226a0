"""Figures about one model version's decisions, for its page (reports/version_page.py).

Counting and grouping happen in the database; only the explanation sample
(bounded) is summarised in Python, from the packed attributions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from django.db.models import Count, QuerySet

from auditapp.decisions.tallies import SCORE_BINS, day_bin_counts, score_bin
from auditapp.registry.models import ModelVersion
from explain.models import Explanation
from explain.packing import unpack_matrix

EXPLANATION_SAMPLE = 5000


@dataclass
class VersionStatistics:
    decisions: int
    per_day: list[tuple[str, int]]
    score_counts: list[int]
    score_edges: list[float]
    explained: int
    importance: list[tuple[str, float]]  # (feature, mean |SHAP|), largest first
    spread: list[tuple[str, list[float]]]  # (feature, SHAP values), same order


def version_statistics(model_version: ModelVersion) -> VersionStatistics:
    # Both figures from the version's tallies of days and score bins (decisions/tallies.py).
    per_day: Counter = Counter()
    bins = [0] * SCORE_BINS
    for day, bin_, n in day_bin_counts(model_version):
        per_day[day] += n
        if 0 <= bin_ < SCORE_BINS:
            bins[bin_] += n
    importance, spread, explained = _attribution_summary(model_version)
    return VersionStatistics(
        decisions=sum(per_day.values()),
        per_day=[(day.isoformat(), per_day[day]) for day in sorted(per_day)],
        score_counts=bins,
        score_edges=[round(i / SCORE_BINS, 4) for i in range(SCORE_BINS + 1)],
        explained=explained,
        importance=importance,
        spread=spread,
    )


def score_counts(decisions: QuerySet) -> list[int]:
    """The decisions in SCORE_BINS equal bins over [0, 1], counted by the database (1.0
    joins the last bin): the version's page and the compliance report draw the same
    histogram, and neither reads every score."""
    counted = dict(
        decisions.exclude(score=None)
        .annotate(bin=score_bin())
        .values_list("bin")
        .annotate(n=Count("id"))
        .values_list("bin", "n")
    )
    return [counted.get(i, 0) for i in range(SCORE_BINS)]


def _attribution_summary(model_version: ModelVersion):
    names = model_version.parsed_schema.names
    sample = list(
        Explanation.objects.filter(
            decision__model_version=model_version, method="shap", status=Explanation.DONE
        )
        .order_by("-decision_id")
        .values_list("result__attributions", flat=True)[:EXPLANATION_SAMPLE]
    )
    if not sample:
        return [], [], 0
    matrix = unpack_matrix(sample, len(names))
    mean_abs = np.abs(matrix).mean(axis=0)
    order = np.argsort(-mean_abs, kind="stable")
    importance = [(names[i], float(mean_abs[i])) for i in order]
    spread = [(names[i], matrix[:, i].tolist()) for i in order]
    return importance, spread, len(sample)
