"""The serving task: shadow versions scoring what was served, after the answer was sent."""

from __future__ import annotations

from celery import shared_task

from auditapp.serving.services import score_shadows
from auditapp.tasking import AttestTask


@shared_task(
    base=AttestTask,
    name="serving.shadow",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=120,
    time_limit=150,
    max_retries=5,
    retry_backoff=1,
    retry_backoff_max=120,
    retry_jitter=True,
)
def shadow_decisions(decision_ids: list[int], shadow_version_ids: list[int]) -> int:
    """No failure record: a shadow decision missing is a comparison short of a row, never a
    person's answer; the log line (task.failed) names the ids."""
    return score_shadows(decision_ids, shadow_version_ids)
