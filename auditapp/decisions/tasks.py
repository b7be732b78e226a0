"""Periodic sealing of new decisions and audit events into the hash chain."""

from celery import shared_task

from auditapp.decisions.sealing import seal_new_records


@shared_task(name="audit.seal", acks_late=True, soft_time_limit=300, time_limit=360)
def seal_records() -> int:
    """Beat runs this every minute; a missed run only delays the next seal."""
    return len(seal_new_records())
