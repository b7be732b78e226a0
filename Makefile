# Attest: the entry points the README, CI and developers use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1
# Celery beat's schedule file.
SCHEDULE ?= $${ATTEST_VAR_DIR:-var}/celerybeat-schedule
# Runs a command in a session (and process group) of its own: setsid(1) is not everywhere.
NEW_SESSION = $(PY) -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])'

.PHONY: install run serve demo worker test lint format bench clean

# uv installs the pinned requirements (the same versions pip would) in parallel: about
# 30 s where pip took 2.5 minutes on the 2-core machine. pip installs uv itself, pinned.
UV_VERSION ?= 0.9.5
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# The quick start: migrate, load the demo, then serve.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo --host $(HOST):$(PORT)
	@$(MAKE) --no-print-directory serve ANNOUNCE=1

# The web server, a Celery worker and beat together (Ctrl-C stops all three). The
# worker serves every queue, the sweeper's `maintenance` among them (README: Outages
# and recovery); runserver closes each request's database connection (settings:
# DEV_SERVER). The worker runs in a session of its own, and this shell passes Ctrl-C
# (SIGINT) or SIGTERM on to its main process alone, which stops its pool once the
# running tasks end (a warm shutdown); a second Ctrl-C or SIGQUIT is a cold one.
# A SIGTERM to the whole process group killed the pool's processes mid-task, and
# the main process could then wait for them forever (tests/faults/test_stop.py).
# ANNOUNCE=1 (`make run`) prints the address and the demo logins last, once the worker
# has explained the demo's decisions (wait_for_demo); Celery's banner is left out.
serve: install
	@trap 'kill -INT $$worker 2>/dev/null; kill -TERM $$server $$announce 2>/dev/null' INT; \
	trap 'kill -TERM $$worker $$server $$announce 2>/dev/null' TERM; \
	trap 'kill -QUIT $$worker 2>/dev/null' QUIT; \
	$(NEW_SESSION) $(VENV)/bin/celery -A auditapp --quiet worker --beat --loglevel INFO \
	  --concurrency 2 --schedule $(SCHEDULE) & worker=$$!; \
	$(PY) manage.py runserver --noreload $(HOST):$(PORT) & server=$$!; \
	announce=; if [ -n "$(ANNOUNCE)" ]; then \
	  $(PY) manage.py wait_for_demo --host $(HOST):$(PORT) & announce=$$!; fi; \
	while kill -0 $$worker 2>/dev/null || kill -0 $$server 2>/dev/null; do wait; done

# Every queue, `maintenance` (the sweeper) included; see the README for production.
worker: install
	$(VENV)/bin/celery -A auditapp worker --loglevel INFO

# One test process per core (at most 4): each gets its own database, var folder and
# Redis database (auditapp/test_settings.py). PYTEST_ARGS= runs them in one process.
# The slowest modules start first (tests/conftest.py); worksteal gives a process that runs
# out of tests half of another's, so the run ends when the last short test does.
# The read-replica test runs after the rest, alone: a hot standby of the test cluster
# opens only once no long transaction with many savepoints runs on it (tests/test_replica.py).
# CI's embedded run leaves it to the PostgreSQL run (tests/conftest.py): pytest's exit 5,
# "no tests collected", is then no failure.
PYTEST_ARGS ?= -n auto --maxprocesses 4 --dist worksteal
test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS) --ignore tests/test_replica.py
	$(VENV)/bin/pytest tests/test_replica.py || [ $$? -eq 5 ]

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Benchmarks (PostgreSQL and Redis on 127.0.0.1): figures beside raw baselines.
bench: install
	$(PY) bench/ingest.py
	$(PY) bench/explain.py
	$(PY) bench/agnostic.py
	$(PY) bench/latency.py
	$(PY) bench/monitor.py
	$(PY) bench/report.py
	$(PY) bench/search.py
	$(PY) bench/pages.py
	$(PY) bench/counterfactual.py
	$(PY) bench/whatif.py
	$(PY) bench/counterfactual_flow.py
	$(PY) bench/serving.py
	$(PY) bench/serve.py

clean:
	rm -rf var/
