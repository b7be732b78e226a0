"""The WSGI application bench/serve.py runs under gunicorn: Attest's own, reporting the
time spent inside Django in bench/ingest.py's X-Bench-Server-Ms header."""

from django.core.wsgi import get_wsgi_application

from bench.ingest import timed_application

application = timed_application(get_wsgi_application())
