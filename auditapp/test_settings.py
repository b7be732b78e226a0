"""Test settings: the normal settings with a cheap password hasher.

The database and broker are whatever DATABASE_URL / CELERY_BROKER_URL say
(PostgreSQL and Redis in CI), else the embedded default. Worker processes
started by tests use this module too, so they read the tests' broker folder.
"""

import os
import time

from auditapp.env import env_str, filesystem_broker_options
from auditapp.settings import *  # noqa: F403
from auditapp.settings import CACHES, CELERY_BROKER_URL, DATABASES, INSTALLED_APPS, VAR_DIR

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# First, so its `flush` (append-only tables on PostgreSQL) replaces Django's.
INSTALLED_APPS = ["tests.support", *INSTALLED_APPS]
MEDIA_ROOT = env_str("MEDIA_ROOT", str(VAR_DIR / "test-media"))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that threads in concurrency tests share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
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
