"""`make run`'s processes stop on SIGTERM mid-batch, and leave no explanation claimed.

SIGTERM to the quick start's whole process group (a process manager, the smoke run,
or the recipe's own `kill 0` on Ctrl-C) used to reach the worker's pool processes
too: they died mid-task, and the worker's main process could then wait for them
forever (for a lock a dead child held, or for its results). `make serve` now runs the
worker in a session of its own and passes the signal to its main process alone,
which finishes the running tasks and stops (a warm shutdown).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditapp.celery import app as celery_app
from explain import publishing
from explain.models import Explanation
from tests.factories import DecisionPayloadFactory
from tests.faults.private import elapsed_since, free_port, listening, site_env
from tests.workers import ROOT, wait_until

STOP_BOUND = 60  # seconds; the smoke run allows 30, and a warm stop takes 5-10 here


def processes(schedule: Path) -> list[int]:
    """The worker's processes (main, pool, beat): their command lines name the schedule."""
    found = subprocess.run(
        ["pgrep", "-f", str(schedule)], capture_output=True, text=True, check=False
    ).stdout
    return [int(pid) for pid in found.split()]


def group_alive(pgid: int) -> bool:
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, check=False)
    return found.returncode == 0


@pytest.fixture
def empty_broker():
    celery_app.control.purge()
    yield
    publishing.wait_until_published()
    celery_app.control.purge()


@pytest.mark.django_db(transaction=True)
def test_sigterm_to_the_quick_start_mid_batch_finishes_the_batch_and_stops(
    model_version, ingest, media_root, empty_broker, tmp_path
):
    schedule = tmp_path / "beat-schedule"
    venv = Path(sys.prefix)
    port = free_port()
    log = tmp_path / "serve.log"
    # As the smoke run starts `make run`: make leads a process group of its own.
    variables = [f"VENV={venv}", f"PORT={port}", f"SCHEDULE={schedule}"]
    make = subprocess.Popen(
        ["make", "--no-print-directory", "serve", *variables, "-o", f"{venv}/.installed"],
        cwd=ROOT,
        env=site_env(MEDIA_ROOT=str(media_root)),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(lambda: listening(port), "the development server to listen", 60)
        ingest(*DecisionPayloadFactory.build_batch(60))
        wait_until(
            lambda: Explanation.objects.filter(method="lime", status=Explanation.RUNNING).exists(),
            "a LIME batch to run",
        )
        claimed = list(
            Explanation.objects.filter(status=Explanation.RUNNING).values_list("pk", flat=True)
        )
        os.killpg(make.pid, signal.SIGTERM)
        stopping = time.monotonic()
        wait_until(
            # make first: polling it reaps it, else it stays in its group as a zombie.
            lambda: (
                make.poll() is not None and not group_alive(make.pid) and not processes(schedule)
            ),
            "make, the server and the worker to stop",
            STOP_BOUND,
        )
        stopped_in = elapsed_since(stopping)
    finally:
        for pid in [make.pid, *processes(schedule)]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        make.wait()

    output = log.read_text()
    assert "Warm shutdown" in output
    assert "exited with 'signal" not in output, output  # no pool process was killed
    # The batches that ran were finished, and nothing is left claimed by a dead lease.
    assert set(Explanation.objects.filter(pk__in=claimed).values_list("status", flat=True)) == {
        Explanation.DONE
    }
    assert not Explanation.objects.filter(status=Explanation.RUNNING).exists()
    print(f"\nstopped {stopped_in} s after SIGTERM, {len(claimed)} claimed rows finished")
