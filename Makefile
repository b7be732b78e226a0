# Attest: the entry points the README, CI and developers use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: install run demo worker test lint format bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# The quick start: migrate, load the demo, then the web server, a Celery
# worker and beat together (Ctrl-C stops all three). The worker serves every
# queue, the sweeper's `maintenance` among them (README: Outages and recovery);
# runserver closes each request's database connection (settings: DEV_SERVER).
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo --host $(HOST):$(PORT)
	@trap 'trap - INT TERM EXIT; kill 0' INT TERM EXIT; \
	$(VENV)/bin/celery -A auditapp worker --beat --loglevel INFO --concurrency 2 \
	  --schedule $${ATTEST_VAR_DIR:-var}/celerybeat-schedule & \
	$(PY) manage.py runserver --noreload $(HOST):$(PORT) & \
	wait

# Every queue, `maintenance` (the sweeper) included; see the README for production.
worker: install
	$(VENV)/bin/celery -A auditapp worker --loglevel INFO

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Benchmarks (PostgreSQL and Redis on 127.0.0.1): figures beside raw baselines.
bench: install
	$(PY) bench/ingest.py
	$(PY) bench/explain.py
	$(PY) bench/monitor.py
	$(PY) bench/report.py

clean:
	rm -rf var/
