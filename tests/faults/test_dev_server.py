"""`make run` on PostgreSQL keeps no idle database connections.

runserver serves each client connection on a thread of its own, and clients keep
their connections alive. A database connection kept for CONN_MAX_AGE on each of
those threads is one PostgreSQL backend per open client connection: 94 idle ones,
then "too many clients" and 500s.
"""

from __future__ import annotations

import http.client
import threading

import pytest
from django.db import connection

from auditapp.accounts.services import create_api_token
from tests.faults.private import dev_server, free_port, site_env
from tests.workers import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CLIENTS = 50


@pytest.fixture(autouse=True)
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("counts PostgreSQL backends; SQLite opens no server connections")


def idle_backends() -> int:
    """Connections to the test database other than this test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_fifty_concurrent_clients_leave_no_database_connections_open(ml_engineer, tmp_path):
    _, key = create_api_token(ml_engineer, scopes=["read"])
    port = free_port()
    # As `make run` starts it: the project's settings, `runserver --noreload`.
    env = site_env(DJANGO_SETTINGS_MODULE="auditapp.settings", ATTEST_VAR_DIR=str(tmp_path))
    server = dev_server(port, env, tmp_path / "server.log")
    clients: list[http.client.HTTPConnection] = []
    statuses: list[int] = []
    start = threading.Barrier(CLIENTS)

    def client() -> None:
        # Keep-alive, as a browser or an HTTP client pool: the connection stays open.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        clients.append(conn)
        start.wait()
        conn.request("GET", "/api/v1/models", headers={"Authorization": f"Token {key}"})
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)

    try:
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * CLIENTS

        # Every client still holds its HTTP connection open; the server holds no
        # database connection for any of them.
        try:
            wait_until(lambda: idle_backends() <= 2, "the database connections to close", 10)
        except AssertionError:
            pytest.fail(f"{idle_backends()} database connections open for {CLIENTS} idle clients")
        print(f"\n{idle_backends()} database connections open for {CLIENTS} idle clients")
    finally:
        for conn in clients:
            conn.close()
        server.stop()
