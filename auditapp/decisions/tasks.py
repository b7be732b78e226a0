"""Periodic sealing of new records into the log, verification jobs, and partitions ahead."""

from celery import shared_task

from auditapp import partitions
from auditapp.accounts import roles
from auditapp.decisions import input_retention, jobs, tallies
from auditapp.decisions.sealing import seal_new_records
from auditapp.tasking import AttestTask


@shared_task(
    base=AttestTask,
    name="audit.seal",
    acks_late=True,
    soft_time_limit=300,
    time_limit=360,
    max_retries=0,  # beat sends it again
)
def seal_records() -> int:
    """Beat runs this every minute; a missed run only delays the next seal. The version
    pages' tallies then count the decisions just sealed (final from now on)."""
    sealed = len(seal_new_records())
    tallies.count_sealed()
    return sealed


@shared_task(
    base=AttestTask,
    name="audit.verify",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=3000,
    time_limit=3300,  # below the broker's visibility timeout (3600 s)
    max_retries=0,  # run_verification writes every failure on the job for the one who asked
)
def verify_log(job_id: int) -> str:
    """Verify the whole log for a VerificationJob, in this process (a prefork child never forks)."""
    return jobs.run_verification(job_id)


@shared_task(
    base=AttestTask,
    name="partitions.create_ahead",
    acks_late=True,
    soft_time_limit=120,
    time_limit=180,
)
def create_partitions_ahead() -> list[str]:
    """Beat runs this every few hours: next months' partitions exist long before they are needed.

    Decisions, audit events, explanation results (their migrations partition them). Each
    run creates what is missing (usually nothing); an insert in a month with no
    partition would fail. Then it analyzes each partitioned table, which autovacuum
    never does. The embedded SQLite default is not partitioned.
    """
    tables = partitions.partitioned_tables()
    created = [name for table in tables for name in partitions.create_ahead(table)]
    for table in tables:
        partitions.analyze(table)
    return created


@shared_task(
    base=AttestTask,
    name="retention.apply",
    acks_late=True,
    soft_time_limit=3000,
    time_limit=3300,  # below the broker's visibility timeout (3600 s)
    max_retries=0,  # beat sends it again tomorrow; a failure is in the worker's log and no
    # declaration is written (the run is one transaction per model)
)
def apply_retention() -> dict[str, int]:
    """Beat runs this daily: erase the inputs past each model's retention period."""
    runs = input_retention.apply_retention(roles.system_actor("retention (beat)"), via="beat")
    return {run.model: len(run.plan.ids) for run in runs}
