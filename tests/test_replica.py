"""Reads off the primary, against a real streaming replica of the test cluster.

The module starts one replica (pg_basebackup -R of the running cluster, on a free port)
and points the `replica` alias at it. Routing is proved by pausing the replica's replay:
a decision then written exists on the primary only, so what a view shows says where it
read. On PostgreSQL a replica that cannot start fails the module (pg_hba.conf needs a
`host replication` line: .ci/run adds it); on SQLite there is nothing to replicate.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.test import Client, override_settings
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from auditapp.replicas import REPLICA, from_replica
from auditapp.reports import services
from auditapp.reports.models import Report
from auditapp.snapshots import one_moment
from tests.factories import MODEL_NAME, DecisionPayloadFactory
from tests.workers import wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
        reason="a streaming replica needs PostgreSQL (DATABASE_URL=postgres://...)",
    ),
    pytest.mark.django_db(transaction=True, databases=[DEFAULT_DB_ALIAS, REPLICA]),
]

REPLAY_TIMEOUT = 30  # seconds: a replica on the same machine replays in milliseconds
# Settings a hot standby must have at least as high as its primary's.
COPIED_SETTINGS = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)


def _primary(sql: str, params=()):
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def _replica(sql: str, params=()):
    with connections[REPLICA].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Standby:
    """A PostgreSQL hot standby of the test cluster, in a folder of its own."""

    def __init__(self) -> None:
        primary = connections[DEFAULT_DB_ALIAS].settings_dict
        self.host, self.port = primary["HOST"] or "127.0.0.1", str(primary["PORT"] or 5432)
        self.user = primary["USER"] or "postgres"
        major = int(_primary("SHOW server_version_num")) // 10000
        self.bin = Path(f"/usr/lib/postgresql/{major}/bin")
        self.copied = {name: _primary(f"SHOW {name}") for name in COPIED_SETTINGS}
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.folder = Path(tempfile.mkdtemp(prefix="attest-replica-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"

    def run(self, *command: str) -> None:
        try:
            result = subprocess.run(
                [*self.as_postgres, *command],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            # pg_basebackup copies the whole cluster, not the test database alone.
            size = _primary("SELECT pg_size_pretty(sum(pg_database_size(oid))) FROM pg_database")
            raise RuntimeError(
                f"{command[0]} took over 60 s: it copies the whole test cluster, {size} here. "
                "A benchmark database left on it (bench/search.py keeps attest_bench_search) "
                "makes the copy slow: drop it."
            ) from exc
        if result.returncode != 0:
            log = self.folder / "server.log"
            raise RuntimeError(
                f"Could not start a streaming replica of the test cluster: {' '.join(command)} "
                f"exited {result.returncode}:\n{result.stdout}{result.stderr}"
                + (log.read_text() if log.exists() else "")
                + "\nIs there a `host replication all 127.0.0.1/32 trust` line in "
                "pg_hba.conf (.ci/run adds it), and wal_level=replica?"
            )

    def start(self) -> int:
        # -c fast: checkpoint at once instead of waiting for the next spread one.
        self.run(
            str(self.bin / "pg_basebackup"),
            *("-h", self.host, "-p", self.port, "-U", self.user),
            *("-D", str(self.data), "-R", "-X", "stream", "-c", "fast", "--no-sync"),
        )
        (self.folder / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        )
        for attempt in range(3):  # another process may take the free port before us
            port = _free_port()
            conf = [
                f"port = {port}",
                "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{self.folder}'",
                f"hba_file = '{self.folder / 'pg_hba.conf'}'",
                "hot_standby = on",
                "fsync = off",
                "shared_buffers = 16MB",
                *(f"{name} = {value}" for name, value in self.copied.items()),
            ]
            (self.data / "postgresql.conf").write_text("\n".join(conf) + "\n")
            try:
                self.run(
                    str(self.bin / "pg_ctl"),
                    *("-D", str(self.data), "-l", str(self.folder / "server.log")),
                    # A hot standby opens once the primary logs a snapshot of its running
                    # transactions (every 15 s while busy): on a busy shared cluster, that long.
                    *("-w", "-t", "90", "start"),
                )
            except RuntimeError:
                log = self.folder / "server.log"
                if attempt == 2 or "could not bind" not in (
                    log.read_text() if log.exists() else ""
                ):
                    raise  # a port taken meanwhile is worth another try; nothing else is
            else:
                return port
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [
                    *self.as_postgres,
                    *(str(self.bin / "pg_ctl"), "-D", str(self.data)),
                    *("-m", "immediate", "stop"),
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def replica(django_db_setup, django_db_blocker) -> Iterator[str]:
    """The `replica` alias on a streaming replica of the test database; the router on."""
    with django_db_blocker.unblock():
        standby = Standby()
        try:
            port = standby.start()
            primary = connections[DEFAULT_DB_ALIAS].settings_dict
            alias = {
                **primary,
                "HOST": "127.0.0.1",
                "PORT": port,
                "CONN_MAX_AGE": 0,
                # As settings.py says: never created or flushed; NAME is the test database.
                "TEST": {**primary["TEST"], "MIRROR": DEFAULT_DB_ALIAS},
            }
            settings.DATABASES[REPLICA] = connections.settings[REPLICA] = alias
            routed = override_settings(DATABASE_ROUTERS=["auditapp.replicas.ReplicaRouter"])
            routed.enable()
            try:
                assert _replica("SELECT pg_is_in_recovery()") is True
                yield REPLICA
            finally:
                routed.disable()
                connections[REPLICA].close()
                del connections[REPLICA]
                settings.DATABASES.pop(REPLICA, None)
                connections.settings.pop(REPLICA, None)
        finally:
            standby.stop()


def wait_replayed() -> None:
    """Until the replica has replayed everything the primary has written so far.

    The insert position, not the write position: the test settings commit without waiting
    for the WAL to be written out (synchronous_commit=off), so a commit just made may not
    be written yet; the WAL writer sends it on within a fraction of a second."""
    lsn = _primary("SELECT pg_current_wal_insert_lsn()::text")
    wait_until(
        lambda: _replica("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]),
        f"the replica to replay up to {lsn}",
        timeout=REPLAY_TIMEOUT,
    )


@contextmanager
def replay_paused() -> Iterator[None]:
    """The replica stops applying the primary's changes: what is written now is on the
    primary only, until the block ends."""
    wait_replayed()
    _replica("SELECT pg_wal_replay_pause()::text")
    wait_until(
        lambda: _replica("SELECT pg_get_wal_replay_pause_state()") == "paused",
        "the replica's replay to pause",
        timeout=REPLAY_TIMEOUT,
    )
    try:
        yield
    finally:
        _replica("SELECT pg_wal_replay_resume()::text")


def test_search_reads_the_replica_detail_and_writes_the_primary(
    replica, model_version, ingest, auditor, api_client
):
    (first,) = ingest(DecisionPayloadFactory())
    api = api_client(auditor)
    page = Client()
    page.force_login(auditor)

    def searched() -> list[int]:
        response = api.get("/api/v1/decisions", {"model": MODEL_NAME})
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    wait_replayed()
    assert searched() == [first["id"]]
    with replay_paused():
        (second,) = ingest(DecisionPayloadFactory())
        assert Decision.objects.filter(pk=second["id"]).exists()  # unmarked: the primary

        # The search reads the replica, which has not replayed the second decision yet.
        assert searched() == [first["id"]]
        html = page.get("/decisions/", {"model": MODEL_NAME}).content.decode()
        assert f"/decisions/{first['id']}/" in html
        assert f"/decisions/{second['id']}/" not in html
        # Its CSV export too, though its rows are read while the file streams.
        exported = page.get("/decisions/export.csv", {"model": MODEL_NAME})
        ids = [row["id"] for row in csv.DictReader(io.StringIO(exported.getvalue().decode()))]
        assert ids == [str(first["id"])]

        # One decision's page and its API read the primary: a link just made must work.
        detail = api.get(f"/api/v1/decisions/{second['id']}")
        assert detail.status_code == 200, detail.content
        assert detail.json()["id"] == second["id"]
        shown = page.get(f"/decisions/{second['id']}/")
        assert shown.status_code == 200
        assert shown.context["decision"].pk == second["id"]

        # The searches' audit events were written while reading the replica: on the primary.
        searches = AuditEvent.objects.filter(action="decisions.searched", actor=auditor)
        assert searches.count() == 3
        assert searches.using(REPLICA).count() == 1  # the one before the pause

        # Marked reads inside a transaction on the primary stay there (its own writes).
        with from_replica() as alias:
            assert alias == REPLICA
            assert not Decision.objects.filter(pk=second["id"]).exists()
            with transaction.atomic():
                assert Decision.objects.filter(pk=second["id"]).exists()

    wait_replayed()
    assert sorted(searched()) == sorted([first["id"], second["id"]])


def test_one_moment_takes_its_snapshot_where_the_reads_go(replica):
    with from_replica(), one_moment():
        assert connections[REPLICA].in_atomic_block
        assert not connections[DEFAULT_DB_ALIAS].in_atomic_block
        assert _replica("SHOW transaction_isolation") == "repeatable read"
        assert _replica("SHOW transaction_read_only") == "on"
    with one_moment():
        assert connections[DEFAULT_DB_ALIAS].in_atomic_block
        assert not connections[REPLICA].in_atomic_block


def test_a_compliance_report_counts_what_the_replica_has(
    replica, model_version, ingest, compliance_officer
):
    ingest(*(DecisionPayloadFactory() for _ in range(3)))
    now = timezone.now()
    body = {
        "kind": "model_compliance",
        "model": MODEL_NAME,
        "version": model_version.version,
        "from": (now - timedelta(days=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
        "format": "json",
    }
    actor = roles.Actor(user=compliance_officer)

    def generated() -> tuple[Report, dict]:
        report = services.generate_report(services.request_report(actor, body).pk)
        with report.file.open("rb") as handle:
            return report, json.load(handle)["data"]["sections"]

    with replay_paused():
        ingest(*(DecisionPayloadFactory() for _ in range(2)))  # on the primary only
        report, sections = generated()  # its row was written after the pause
        assert report.status == Report.DONE and report.progress == 100, report.error
        assert sections["volumes"]["decisions"] == 3
        assert sections["integrity"]["period_decisions"] == 3
        # The chain is verified on the primary: every decision written so far.
        assert sections["integrity"]["ok"] is True
        assert sections["integrity"]["decisions_checked"] == 5
    wait_replayed()
    _, sections = generated()
    assert sections["volumes"]["decisions"] == 5
    assert sections["integrity"]["period_decisions"] == 5
