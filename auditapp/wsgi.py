"""WSGI entry point (gunicorn auditapp.wsgi).

Each web process loads the models it serves as it starts (ATTEST_SERVING_PRELOAD)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditapp.settings")
application = get_wsgi_application()

from auditapp.serving.warm import preload_at_start  # noqa: E402 - needs Django set up

preload_at_start()
