"""Services a fault test may stop and start: its own PostgreSQL cluster, Redis server,
development server and Celery workers. The shared PostgreSQL and Redis are never touched.

A PostgreSQL cluster needs the server binaries (initdb, pg_ctl): without them the
test fails, saying what to install; it never skips.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.workers import ROOT, database_url, wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL server's bin directory (Debian's layout, else PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3].split(".")[0]),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError(
        "No PostgreSQL server binaries (initdb, pg_ctl) on this machine: the fault tests "
        "start a cluster of their own. Install them (Debian: apt-get install postgresql)."
    )


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port (trust auth, no fsync: data is disposable).

    As root, the server runs as the `postgres` user (initdb refuses root).
    """

    def __init__(self):
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="attest-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            os.chown(self.dir, pwd.getpwnam("postgres").pw_uid, -1)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb", "-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust", "--no-sync"
        )

    def _run(self, program: str, *args: str) -> None:
        command = [*self.as_user, str(self.bindir / program), *args]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=100"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.dir / "data"),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: backends die mid-transaction, WAL is replayed at start."""
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def remove(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server of the test's own on a free port, without persistence:
    stopping it loses whatever it held, as a crashed broker without disk would."""

    def __init__(self):
        if shutil.which("redis-server") is None:
            raise RuntimeError("No redis-server on this machine (Debian: apt-get install redis).")
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: listening(self.port), "the private redis-server to listen", 20)

    def stop(self) -> None:
        """SIGKILL: no goodbye to clients, nothing saved."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        wait_until(lambda: not listening(self.port), "the private redis-server to stop", 20)


def site_env(**overrides: str) -> dict[str, str]:
    """The environment of a process of the site under test (test settings, tests' database)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "auditapp.test_settings",
        "DATABASE_URL": database_url(),
        **overrides,
    }


class Process:
    """A site process (dev server, worker) in its own session, so that it and its
    children can be killed at once, as when the machine under them dies."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL to the whole process group: no task is acknowledged or rejected."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM to the main process alone, as `make serve` does: a worker's pool
        processes that get it too die mid-task (tests/faults/test_stop.py)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def dev_server(port: int, env: dict[str, str], log: Path) -> Process:
    """The web server exactly as `make run` starts it."""
    server = Process(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"], env, log
    )
    wait_until(lambda: listening(port), "the development server to listen", 60)
    return server


def worker(env: dict[str, str], log: Path, *, concurrency: int = 2, beat: Path | None = None):
    """`celery -A auditapp worker` as `make run` starts it: every queue, `--beat` if a
    schedule file is given."""
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "auditapp",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
    ]
    if beat is not None:
        args += ["--beat", "--schedule", str(beat)]
    return Process(args, env, log)


def request(port: int, method: str, path: str, *, body=None, headers=None, timeout=30):
    """One HTTP request on a new connection: (status, headers, body bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict | list) else body
        sent = {"Content-Type": "application/json"} if isinstance(body, dict | list) else {}
        connection.request(method, path, body=data, headers={**sent, **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 1)
