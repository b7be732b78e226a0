"""Verification as a job: requested in a web request, run by a worker on the `verify` queue.

Verifying reads and hashes every record, which takes minutes on a large log:
the request stores a VerificationJob and returns at once; the worker writes
its progress to the row and then the result, which is what GET
/api/v1/audit/verify answers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent, LogRecord
from auditapp.decisions import verification
from auditapp.decisions.models import Decision, VerificationJob
from auditapp.errors import Conflict, NotFound

log = logging.getLogger(__name__)
PROGRESS_EVERY = 0.5  # seconds between progress writes


def request_verification(
    actor: roles.Actor,
    against: dict[str, Any] | None = None,
    *,
    ip: str | None = None,
    via: str = "api",
) -> VerificationJob:
    """Store the job; it is sent to the workers once the transaction commits."""
    actor.require(roles.VERIFY_CHAIN)
    if against is not None:
        verification.check_kept_seal(against)  # refused now (400), not later by the worker
    user = actor.user if actor.user.is_authenticated else None
    with transaction.atomic():
        job = VerificationJob.objects.create(against=against, requested_by=user, via=via, ip=ip)
        transaction.on_commit(lambda: enqueue(job.pk))
    return job


def enqueue(job_id: int) -> None:
    """Sent by name (tasks.py imports this module); CELERY_TASK_ROUTES puts it on `verify`."""
    try:
        current_app.send_task("audit.verify", args=(job_id,))
    except Exception:  # the broker being down must not fail a committed request
        log.warning("audit.verify.enqueue_failed job=%s", job_id, exc_info=True)
        VerificationJob.objects.filter(pk=job_id).update(
            status=VerificationJob.FAILED,
            error="The job could not be sent to the workers (broker unreachable); ask again.",
            finished_at=timezone.now(),
        )


def check_small_enough_to_verify_now() -> None:
    """GET verifies within the request only a small log; else 409, pointing to the job."""
    limit = settings.ATTEST_VERIFY_NOW_LIMIT
    records = Decision.objects.count() + AuditEvent.objects.count() + LogRecord.objects.count()
    if records > limit:
        raise Conflict(
            f"The log holds {records} decisions, audit events and records, more than the {limit} "
            "verified within a request: POST /api/v1/audit/verify runs the verification "
            "as a job, and its status_url shows the progress and then the result.",
            code="verify_as_job",
            details={"records": records, "limit": limit, "post": "/api/v1/audit/verify"},
        )


def get_job_for_actor(actor: roles.Actor, job_id: int) -> VerificationJob:
    actor.require(roles.VERIFY_CHAIN)
    job = VerificationJob.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"No verification {job_id}.")
    return job


def job_json(job: VerificationJob) -> dict[str, Any]:
    return {
        "id": job.pk,
        "status": job.status,
        "progress": job.progress,
        "result": job.result,
        "error": job.error or None,
        "status_url": f"/api/v1/audit/verify/{job.pk}",
        "requested_at": job.requested_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def run_verification(job_id: int) -> str:
    """In a worker: verify the log, writing progress as records are checked; the final status."""
    job = VerificationJob.objects.filter(pk=job_id).first()
    if job is None or job.finished:
        return job.status if job else "missing"
    VerificationJob.objects.filter(pk=job.pk).update(
        status=VerificationJob.RUNNING, started_at=timezone.now(), progress=0
    )
    try:
        result = verification.verify_chain(against=job.against, progress=_progress_writer(job))
        actor = roles.Actor(user=job.requested_by) if job.requested_by else roles.system_actor()
        verification.note_verified(actor, result, ip=job.ip, via=job.via, job=job.pk)
    except Exception as exc:  # final: written on the row for the one who asked
        log.exception("audit.verify.failed job=%s", job.pk)
        VerificationJob.objects.filter(pk=job.pk).update(
            status=VerificationJob.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            finished_at=timezone.now(),
        )
        return VerificationJob.FAILED
    VerificationJob.objects.filter(pk=job.pk).update(
        status=VerificationJob.DONE,
        progress=100,
        result=result.as_dict(),
        finished_at=timezone.now(),
    )
    return VerificationJob.DONE


def _progress_writer(job: VerificationJob):
    """Progress = records checked / records at the start, written at most twice a second."""
    total = max(
        1, Decision.objects.count() + AuditEvent.objects.count() + LogRecord.objects.count()
    )
    done = {"decision": 0, "event": 0}
    last = {"at": 0.0}

    def progress(kind: str, count: int) -> None:
        done[kind] = count
        now = time.monotonic()
        if now - last["at"] >= PROGRESS_EVERY:
            last["at"] = now
            write_progress(job.pk, min(99, int(100 * sum(done.values()) / total)))

    return progress


def write_progress(job_id: int, percent: int) -> None:
    """Written at once (autocommit), so the page and the API show it while the job runs."""
    VerificationJob.objects.filter(pk=job_id).update(progress=percent)
