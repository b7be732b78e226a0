"""Test settings: the normal settings with a cheap password hasher.

The database and broker are whatever DATABASE_URL / CELERY_BROKER_URL say
(PostgreSQL and Redis in CI), else the embedded default.
"""

from auditapp.settings import *  # noqa: F403
from auditapp.settings import CELERY_BROKER_URL, DATABASES, VAR_DIR

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = VAR_DIR / "test-media"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that threads in concurrency tests share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Tasks enqueued by tests go to their own folder, never to the queue a
    # development worker (make run) is reading.
    _test_broker = VAR_DIR / "test-broker"
    for _sub in ("queue", "processed"):
        (_test_broker / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_test_broker / "queue"),
        "data_folder_out": str(_test_broker / "queue"),
        "processed_folder": str(_test_broker / "processed"),
        "store_processed": False,
    }
