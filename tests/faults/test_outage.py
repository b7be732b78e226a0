"""The database goes away: every request gets a 503 with Retry-After, never a traceback,
and ingestion stays all-or-nothing.

The first tests point the site's connection at a database that cannot be reached
(a port nobody listens on; for SQLite, a file in a directory that does not exist)
and go through the whole middleware stack with Django's test client, DEBUG on.
The last one crashes a PostgreSQL cluster of its own under a development server
while clients post batches of decisions, starts it again, and counts.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.http import HttpResponse
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import include, path

from auditapp.accounts.services import create_api_token
from tests.factories import MODEL_CARD, DecisionPayloadFactory, upload_form
from tests.faults.private import (
    PrivatePostgres,
    dev_server,
    free_port,
    request,
    site_env,
)
from tests.workers import ROOT, wait_until

UNAVAILABLE_PAGE = "temporarily unavailable"


def point_at_nothing() -> None:
    """From the next query on, the database cannot be reached."""
    connection.close()
    if connection.vendor == "postgresql":
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(free_port()))
    else:
        connection.settings_dict["NAME"] = "/nonexistent-directory/attest.sqlite3"


@pytest.fixture
def unreachable(transactional_db, settings):
    """Call it to lose the database; the settings are restored (and reconnected) afterwards."""
    settings.DEBUG = True  # the default for `make run`: a 500 would show a traceback
    saved = dict(connection.settings_dict)
    yield point_at_nothing
    connection.close()
    connection.settings_dict.update(saved)


def assert_api_unavailable(response) -> None:
    assert response.status_code == 503, response.content[:300]
    assert int(response["Retry-After"]) > 0
    body = response.json()
    assert body["error"]["code"] == "unavailable"
    assert body["error"]["details"] is None
    assert set(body["error"]) == {"code", "message", "details"}


def assert_page_unavailable(response) -> None:
    assert response.status_code == 503, response.content[:300]
    assert int(response["Retry-After"]) > 0
    assert response["Content-Type"].startswith("text/html")
    text = response.content.decode()
    assert UNAVAILABLE_PAGE in text
    assert "Traceback" not in text


def test_the_api_answers_503_json_with_retry_after_for_token_and_session_clients(
    unreachable, ml_engineer, model_version
):
    _, key = create_api_token(ml_engineer, scopes=["read", "ingest"])
    # A middleware that reads the session's user (two factors) meets the outage before the
    # view: Django's error path, whose signal the test client would raise instead of
    # answering; a real server answers what OutageMiddleware makes of it.
    signed_in = Client(raise_request_exception=False)
    signed_in.force_login(ml_engineer)
    tokened = Client(HTTP_AUTHORIZATION=f"Token {key}")

    unreachable()

    # Token authentication (DRF) is where the first query fails.
    assert_api_unavailable(tokened.get("/api/v1/decisions"))
    assert_api_unavailable(
        tokened.post(
            "/api/v1/decisions",
            {"decisions": DecisionPayloadFactory.build_batch(2)},
            content_type="application/json",
        )
    )
    # Session authentication: the session is read first.
    assert_api_unavailable(signed_in.get("/api/v1/models"))
    assert_api_unavailable(signed_in.get("/api/v1/decisions/1"))


def test_pages_answer_a_plain_503_page_never_a_traceback(unreachable, compliance_officer):
    signed_in = Client(raise_request_exception=False)  # as above
    signed_in.force_login(compliance_officer)

    unreachable()

    for page in ("/", "/decisions/", "/audit/", "/review/"):
        assert_page_unavailable(signed_in.get(page))
    # Signing in: the lockout backend and the user table.
    assert_page_unavailable(
        Client().post("/accounts/login/", {"username": "compliance_officer", "password": "x"})
    )


@pytest.mark.django_db
def test_the_api_answers_503_while_the_cache_of_rate_counters_is_unreachable(settings, ml_engineer):
    """By default the counters live in the broker's Redis: it going away is an outage too."""
    _, key = create_api_token(ml_engineer, scopes=["read"])
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nobody listens
        }
    }

    assert_api_unavailable(Client(HTTP_AUTHORIZATION=f"Token {key}").get("/api/v1/models"))


# A view that writes the session, then loses the database: the session is saved by
# SessionMiddleware after the view, so the error is raised outside the view.
def write_session_then_lose_the_database(request):
    request.session["seen"] = True
    point_at_nothing()
    return HttpResponse("ok")


urlpatterns = [
    path("outage/session", write_session_then_lose_the_database),
    path("", include("auditapp.urls")),
]


@pytest.mark.urls("tests.faults.test_outage")
def test_an_error_raised_by_a_middleware_after_the_view_is_a_503_too(unreachable):
    # The test client would re-raise the error Django reports; a browser sees the answer.
    response = Client(raise_request_exception=False).get("/outage/session")

    assert_page_unavailable(response)


# --- PostgreSQL crashes under load --------------------------------------------------------

CLIENT_THREADS = 4
BATCH = 10


class Load:
    """Clients posting batches of new decisions, each remembering what it sent and got."""

    def __init__(self, port: int, key: str):
        self.port, self.key = port, key
        self.numbers = itertools.count()
        self.answers: list[dict] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(CLIENT_THREADS)]

    def batch(self) -> list[dict]:
        number = next(self.numbers)
        items = DecisionPayloadFactory.build_batch(BATCH)
        for index, item in enumerate(items):
            item["request_id"] = f"b{number:05d}-{index}"
        return items

    def post(self, items: list[dict]) -> dict:
        status, headers, body = request(
            self.port,
            "POST",
            "/api/v1/decisions",
            body={"decisions": items},
            headers={"Authorization": f"Token {self.key}"},
        )
        return {
            "ids": [item["request_id"] for item in items],
            "items": items,
            "status": status,
            "headers": headers,
            "body": body,
            "at": time.monotonic(),
        }

    def run(self) -> None:
        while not self.stopping.is_set():
            self.answers.append(self.post(self.batch()))

    def count(self, status: int, since: float = 0.0) -> int:
        return sum(a["status"] == status and a["at"] >= since for a in list(self.answers))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join()


@pytest.fixture
def private_site(tmp_path, skops_artifact, background_csv):
    """A migrated PostgreSQL cluster of this test's own, a token, the credit model, and the
    development server on it (as `make run` starts it, DEBUG on)."""
    if django_settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("runs in the PostgreSQL suite (it starts its own cluster either way)")
    postgres = PrivatePostgres()
    server = None
    try:
        postgres.start()
        postgres.sql("CREATE DATABASE attest")
        env = site_env(
            DJANGO_SETTINGS_MODULE="auditapp.settings",
            DATABASE_URL=postgres.url("attest"),
            ATTEST_VAR_DIR=str(tmp_path / "var"),
            CELERY_BROKER_URL="",  # the filesystem broker under var/: no worker, no Redis
            ATTEST_CACHE_URL="",
            ATTEST_API_RATE_PER_TOKEN="1000000/min",
            DEBUG="true",
        )
        manage(env, "migrate", "--noinput")
        manage(env, "create_user", "loader", "--role", "ml_engineer", "--password", "p4ss-w0rd-x")
        key = manage(env, "create_token", "loader", "--scopes", "admin").split()[-1]
        port = free_port()
        server = dev_server(port, env, tmp_path / "server.log")
        form = upload_form(
            skops_artifact,
            version="1",
            background=background_csv,
            card=MODEL_CARD,
        )
        status, _, body = request(
            port,
            "POST",
            "/api/v1/models",
            body=encode_multipart(BOUNDARY, form),
            headers={"Authorization": f"Token {key}", "Content-Type": MULTIPART_CONTENT},
        )
        assert status == 201, body
        yield postgres, port, key
    finally:
        if server is not None:
            server.stop()
        postgres.remove()


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.postgres
def test_a_database_crash_under_load_stores_every_acknowledged_batch_whole(private_site, tmp_path):
    postgres, port, key = private_site

    with Load(port, key) as load:
        wait_until(lambda: load.count(201) >= 10, "ten acknowledged batches", 60)
        postgres.stop("immediate")  # a crash: backends die mid-transaction
        down = time.monotonic()
        wait_until(lambda: load.count(503, since=down) >= 20, "clients to be told to retry", 60)
        postgres.start()
        up = time.monotonic()
        wait_until(lambda: load.count(201, since=up) >= 10, "ingestion to resume", 60)

    answers = load.answers
    statuses = Counter(a["status"] for a in answers)
    assert set(statuses) == {201, 503}, statuses  # no 500, nothing else
    for answer in answers:
        if answer["status"] == 503:
            assert int(answer["headers"]["Retry-After"]) > 0
            assert json.loads(answer["body"])["error"]["code"] == "unavailable"

    stored = _stored(postgres)
    half_stored = [a for a in answers if 0 < len(stored.keys() & set(a["ids"])) < BATCH]
    assert half_stored == []
    lost = [a for a in answers if a["status"] == 201 and not stored.keys() >= set(a["ids"])]
    assert lost == []  # every acknowledged decision is stored
    # Each stored decision came with its pending SHAP and LIME explanations.
    assert set(stored.values()) == {2}
    refused_yet_stored = [a for a in answers if a["status"] == 503 and a["ids"][0] in stored]

    # What was refused is sent again: stored once, whatever happened to it.
    for answer in answers:
        if answer["status"] == 503:
            again = load.post(answer["items"])
            assert again["status"] == 201, again["body"]
    stored = _stored(postgres)
    assert len(stored) == BATCH * len(answers)
    # One ingestion event per stored request: committed with its decisions, or not at all.
    ingested_events = postgres.sql(
        "SELECT count(*) FROM accounts_auditevent WHERE action = 'decisions.ingested'", "attest"
    )[0][0]
    assert ingested_events == statuses[201] + len(refused_yet_stored) + statuses[503]
    print(
        f"\n{len(answers)} batches of {BATCH}: {statuses[201]} acknowledged (201) and stored, "
        f"{statuses[503]} answered 503 ({len(refused_yet_stored)} of them stored anyway: the "
        f"crash hit their commit), none half-stored; {ingested_events} ingestion events; "
        f"why, as the server logged them: {_reasons(tmp_path / 'server.log')}"
    )


def _stored(postgres) -> dict[str, int]:
    """request_id -> number of explanation rows, for every stored decision."""
    rows = postgres.sql(
        "SELECT d.request_id, count(e.id) FROM decisions_decision d "
        "LEFT JOIN explain_explanation e ON e.decision_id = d.id GROUP BY d.request_id",
        "attest",
    )
    return dict(rows)


def _reasons(server_log) -> dict[str, int]:
    """The 503s by the error the server met (connected mid-request, or refused at connect)."""
    reasons = Counter()
    for line in server_log.read_text().splitlines():
        if "unavailable.503" in line:
            reasons[line.split(": ", 1)[1][:70]] += 1
    return dict(reasons)
