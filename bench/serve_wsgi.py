"""The WSGI application bench/serve.py runs under gunicorn: Attest's own (auditapp.wsgi, which
loads the served versions as each worker starts), reporting the time spent inside Django in
bench/ingest.py's X-Bench-Server-Ms header."""

from auditapp.wsgi import application as attest_application
from bench.ingest import timed_application

application = timed_application(attest_application)
