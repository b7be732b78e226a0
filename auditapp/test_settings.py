"""Test settings: the normal settings with a cheap password hasher.

The database and broker are whatever DATABASE_URL / CELERY_BROKER_URL say
(PostgreSQL and Redis in CI), else the embedded default.
"""

from auditapp.settings import *  # noqa: F403
from auditapp.settings import DATABASES, VAR_DIR

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = VAR_DIR / "test-media"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that threads in concurrency tests share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
