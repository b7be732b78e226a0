"""What explanations copy of a decision's inputs, for erasure (decisions/erasure.py).

Explanation results hold attributions (one float per feature) and the names of the
top features; top reasons hold names: no input values. A counterfactual result holds
the original inputs and the changed ones: a copy. Its rows are append-only records of
the sealed log with no erasure of their own yet, so a decision with counterfactual
results is not erased (refused, or kept by retention), and the plan says so.
"""

from django.db.models import QuerySet

from auditapp.decisions.erasure import CopyHolder, register_copies
from explain.models import CounterfactualResult


def counterfactual_copies(decisions: QuerySet) -> set[int]:
    held = CounterfactualResult.objects.filter(decision__in=decisions.values("id"))
    return set(held.values_list("decision_id", flat=True).distinct())


register_copies(CopyHolder("counterfactual results", counterfactual_copies))
