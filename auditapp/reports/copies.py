"""What reports copy of a decision's inputs, for erasure (decisions/erasure.py).

A decision notice's file (PDF or JSON) holds the person's inputs: erasing the decision
removes the files of its notices; the rows stay, saying the file was erased, so the
request that made them is still on record. A compliance report's appendix holds no
input values (ids, hashes, attributions of non-sensitive features).
"""

from django.db.models import QuerySet

from auditapp.decisions.erasure import CopyHolder, register_copies
from auditapp.reports.models import Report

ERASED_NOTE = "The decision's inputs were erased: this notice's file is gone."


def notice_copies(decisions: QuerySet) -> set[int]:
    notices = Report.objects.filter(kind=Report.NOTICE, decision__in=decisions.values("id"))
    return set(notices.exclude(file="").values_list("decision_id", flat=True))


def erase_notices(decision_ids: list[int]) -> int:
    """Remove the notices' files; the rows say why (a notice is never made again)."""
    # Locked: a notice being stored now is waited for, then its file is seen and removed.
    notices = list(
        Report.objects.select_for_update().filter(kind=Report.NOTICE, decision_id__in=decision_ids)
    )
    for notice in notices:
        if notice.file:
            notice.file.delete(save=False)
        notice.file = ""
        notice.status = Report.FAILED
        notice.error = ERASED_NOTE
        notice.save(update_fields=["file", "status", "error"])
    return len(notices)


register_copies(CopyHolder("decision notices", notice_copies, erase_notices))
