"""A real Celery worker process for tests, and waiting on conditions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from explain.models import Explanation

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def python_json(script: str, env: dict[str, str]) -> Any:
    """Run `script` in a fresh interpreter at the repository's root (only a fresh one tells
    what a process loads as it starts); what its last line printed, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)  # a poll interval, not a wait for something to happen


def unfinished() -> int:
    return Explanation.objects.exclude(status__in=[Explanation.DONE, Explanation.FAILED]).count()


class Worker:
    """`celery -A auditapp worker` in a subprocess, serving every queue, or only `queues`.

    A test of one flow (a monitoring window, a report) names its queues: a worker serving
    every queue would also explain each decision the test records, SHAP and LIME, which
    that test never reads (production runs a worker per queue the same way).

    It skips Django's system checks, which Celery runs as a worker starts: they import every
    view (0.2 to 0.4 s of CPU of the 2.1 to 2.9 s a worker takes to be ready), and
    tests/web/test_settings_deploy.py runs them, through `manage.py check`."""

    def __init__(self, media_root: Path, log: Path, queues: tuple[str, ...] = ()):
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "MEDIA_ROOT": str(media_root),
            "DJANGO_SETTINGS_MODULE": "auditapp.test_settings",
            "CELERY_SKIP_CHECKS": "1",
        }
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "auditapp",
                "worker",
                "--concurrency",
                "1",
                "--pool",
                "prefork",
                "--loglevel",
                "INFO",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                *(["--queues", ",".join(queues)] if queues else []),
            ],
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def has_mapped(self, library: str) -> bool:
        """Whether the worker's main process has mapped `library`, a compiled module by its
        path (shap's `shap/_cext`): what it loaded before forking its pool."""
        return library in Path(f"/proc/{self.process.pid}/maps").read_text()

    def children(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
