"""What explanations copy of a decision's inputs, for erasure (decisions/erasure.py).

Explanation results hold attributions (one float per feature) and the names of the
top features; top reasons hold names: no input values. A counterfactual result holds
the original inputs and the changed ones: a copy. Counterfactual results are not in the
sealed log, so erasing a decision deletes them (through the append-only triggers' one
DELETE for the copies of a decision the same declaration erased), and its work row
says why there are none; a decision without inputs cannot be searched again.
"""

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from auditapp.decisions.erasure import CopyHolder, register_copies
from explain.models import CounterfactualResult, CounterfactualWork

ERASED = "The decision's inputs were erased: its counterfactuals were deleted with them."


def counterfactual_copies(decisions: QuerySet) -> set[int]:
    held = CounterfactualResult.objects.filter(decision__in=decisions.values("id"))
    return set(held.values_list("decision_id", flat=True).distinct())


def erase_counterfactuals(decision_ids: list[int]) -> int:
    """Delete the decisions' counterfactual results; their work rows fail, saying why."""
    CounterfactualWork.objects.filter(decision_id__in=decision_ids).update(
        result=None, status=CounterfactualWork.FAILED, error=ERASED, updated_at=timezone.now()
    )
    table = CounterfactualResult._meta.db_table
    deleted = 0
    with connection.cursor() as cursor:
        for at in range(0, len(decision_ids), 10_000):
            chunk = decision_ids[at : at + 10_000]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(f"DELETE FROM {table} WHERE decision_id IN ({marks})", chunk)
            deleted += cursor.rowcount
    return deleted


register_copies(CopyHolder("counterfactual results", counterfactual_copies, erase_counterfactuals))
