"""Test settings: the normal settings with a cheap password hasher.

The database and broker are whatever DATABASE_URL / CELERY_BROKER_URL say
(PostgreSQL and Redis in CI), else the embedded default. Worker processes
started by tests use this module too, so they read the tests' broker folder.
"""

import os
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from auditapp.env import env_str, filesystem_broker_options


def _isolate_test_process() -> None:
    """Under `pytest -n`, each test process gets a var folder (SQLite, filesystem broker,
    media, cache, seal key) and a Redis database of its own.

    Through the environment, so that the Celery workers and servers a test starts
    inherit them; ATTEST_TEST_PROCESS marks it done, so that they do not move again.
    Redis databases count down from the one named: CI's /15 gives gw0 15, gw1 14.
    """
    name = os.environ.get("PYTEST_XDIST_WORKER")
    if not name or os.environ.get("ATTEST_TEST_PROCESS") == name:
        return
    os.environ["ATTEST_TEST_PROCESS"] = name
    index = int(name.removeprefix("gw"))
    var = Path(env_str("ATTEST_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var")))
    os.environ["ATTEST_VAR_DIR"] = str(var / f"pytest-{name}")
    broker = urlsplit(env_str("CELERY_BROKER_URL", ""))
    if broker.scheme in ("redis", "rediss"):
        database = int(broker.path.strip("/") or 0) - index
        if database < 0:
            raise RuntimeError(f"no Redis database left for test process {name}: name a higher one")
        os.environ["CELERY_BROKER_URL"] = urlunsplit(broker._replace(path=f"/{database}"))


_isolate_test_process()

from auditapp.settings import *  # noqa: E402, F403
from auditapp.settings import CACHES, CELERY_BROKER_URL, DATABASES, INSTALLED_APPS, VAR_DIR  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# First, so its `flush` (append-only tables on PostgreSQL) replaces Django's.
INSTALLED_APPS = ["tests.support", *INSTALLED_APPS]
MEDIA_ROOT = env_str("MEDIA_ROOT", str(VAR_DIR / "test-media"))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that threads in concurrency tests share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A commit of a test (or of a worker or server it starts) does not wait for its WAL to
    # reach the disk: the test database is thrown away, and no test crashes the shared
    # cluster (tests/faults/private.py crashes a cluster of its own). Each commit and each
    # transactional test's flush then costs no fsync; what a commit makes visible and when
    # is the same (PostgreSQL: synchronous_commit).
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = f"{_options.get('options', '')} -c synchronous_commit=off".strip()
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Tasks enqueued by tests go to their own folder, never to the queue a
    # development worker (make run) is reading.
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(VAR_DIR / "test-broker")
# Rate-limit counters: a test run never counts what an earlier run (or the development
# server, or another checkout on the same Redis database) left in the cache.
CACHES = {
    "default": {**CACHES["default"], "KEY_PREFIX": f"attest-test-{os.getpid()}-{time.time_ns()}"}
}
if CACHES["default"]["BACKEND"].endswith("FileBasedCache"):
    CACHES["default"]["LOCATION"] = str(VAR_DIR / "test-cache")
# Models registered by tests change stages and traffic at once, as before four-eyes;
# tests/approvals turns it on for the models it gates.
ATTEST_FOUR_EYES_NEW_MODELS = False
