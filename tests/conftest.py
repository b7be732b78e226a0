"""Shared fixtures: one user per role plus an outsider, API clients, a registered credit model.

The model is trained once per session (on a few hundred synthetic applicants);
each test registers it again through the real service, so tests never share rows.
"""

from __future__ import annotations

import gc
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import joblib
import pytest
import skops.io
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from rest_framework.test import APIClient

from auditapp.accounts import roles
from auditapp.accounts.services import create_api_token, create_user
from auditapp.celery import app as celery_app
from auditapp.decisions.models import Decision
from auditapp.decisions.services import record_decisions
from auditapp.demo.credit import FEATURES, applicants, train_model
from auditapp.registry.models import ModelVersion
from auditapp.registry.services import VersionUpload, assign_models, register_model_version
from explain import publishing
from tests.factories import (
    MODEL_CARD,
    MODEL_NAME,
    VERSION,
    DecisionPayloadFactory,
    credit_schema,
)
from tests.workers import Worker

# Who may appear in a request: every role, a domain expert not assigned to the
# model, a user without any role, and nobody at all.
ROLE_USERS = (*roles.ROLES, "outsider", "no_role")
EVERYONE = (*ROLE_USERS, "anonymous")
PASSWORD = "correct-horse-battery"


# --- which tests the embedded default runs under CI -------------------------
#
# CI (.ci/run) runs the suite twice, on PostgreSQL + Redis and on the embedded default
# (SQLite + the filesystem broker). PostgreSQL runs everything. With ATTEST_SKIP_DB_FREE=1
# (set by .ci/run for the embedded run alone) the embedded default runs the tests of the
# code that takes a path of its own there, and leaves the rest to the PostgreSQL run:
#
# - the packages in EMBEDDED_PACKAGES, whose code branches on the database vendor or goes
#   through the broker: append-only guards and audit events, ingestion, sealing and
#   verification, the explanation work rows, claims, workers and sweeper, the review
#   rules, the search's filters, the demo, outages and stopping the quick start;
# - elsewhere, a test (or module) marked `embedded`: its code takes such a path (a report
#   or window read in a snapshot by a worker on the filesystem broker, settings derived
#   from the database or broker URL, the search's input checks and masking in SQLite's
#   JSON functions, the fuzzers, which run there with a quarter of their examples);
# - never a test that uses no database (pytest-django's django_db marker or a database
#   fixture in its closure) unless it is marked `embedded`, nor a slow one marked
#   `database_neutral` (real models trained and explained, the database plain storage).
#
# Without the variable (`make test`), everything runs, in full.

TESTS_DIR = Path(__file__).resolve().parent
EMBEDDED_PACKAGES = frozenset(
    {"accounts", "decisions", "demo", "dossier", "explain", "faults", "reviews"}
)

DATABASE_FIXTURES = frozenset(
    {
        "db",
        "transactional_db",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
        "live_server",
    }
)


def uses_no_database(item: pytest.Item) -> bool:
    if item.get_closest_marker("django_db") or item.get_closest_marker("embedded"):
        return False
    return not DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ()))


def embedded_default() -> bool:
    return django_settings.DATABASES["default"]["ENGINE"].endswith(
        "sqlite3"
    ) and django_settings.CELERY_BROKER_URL.startswith("filesystem://")


def second_database_run() -> bool:
    """CI's embedded run, beside the PostgreSQL run that runs everything."""
    return os.environ.get("ATTEST_SKIP_DB_FREE") == "1" and embedded_default()


def package_of(item: pytest.Item) -> str:
    """The test's package under tests/ ("" for a module at its top)."""
    parts = Path(str(item.path)).relative_to(TESTS_DIR).parts
    return parts[0] if len(parts) > 1 else ""


def left_to_postgresql(item: pytest.Item) -> bool:
    if item.get_closest_marker("embedded"):
        return False
    if uses_no_database(item) or item.get_closest_marker("database_neutral"):
        return True
    return package_of(item) not in EMBEDDED_PACKAGES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slowest_modules_first(items)
    if not second_database_run():
        return
    kept = [item for item in items if not left_to_postgresql(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if left_to_postgresql(item)])
        items[:] = kept


def pytest_collection_finish(session: pytest.Session) -> None:
    """What a test process loaded to collect (Django, scikit-learn, shap, pandas: about
    300,000 objects) is frozen out of the garbage collector, and the young generation
    collected a fourteenth as often: measured with gc.callbacks over 338 tests, the
    collections took 4.7 s of a 70 s run, 2.5 s after."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 50)


# --- the order: the slowest modules first ------------------------------------
#
# Under `pytest -n`, a test process that is given a 40 s test last keeps the run going while
# the others idle. The modules tests/slowest.txt lists (their slowest test as measured on
# the PostgreSQL run) go first, slowest first, each module's tests together and in their
# own order; the rest follow in collection order. xdist's worksteal scheduler (Makefile)
# then hands the short tests at the end to whichever process is free.


def slowest_modules() -> dict[str, float]:
    seconds = {}
    for line in (TESTS_DIR / "slowest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            value, module = line.split()
            seconds[module] = float(value)
    return seconds


def slowest_modules_first(items: list[pytest.Item]) -> None:
    seconds = slowest_modules()

    def module_seconds(item: pytest.Item) -> float:
        path = Path(str(item.path))
        if not path.is_relative_to(TESTS_DIR):
            return 0.0
        return -seconds.get(path.relative_to(TESTS_DIR).as_posix(), 0.0)

    items.sort(key=module_seconds)  # stable: a module's tests keep their order


# --- the trained model (once per session) -----------------------------------


@pytest.fixture(scope="session")
def credit_frame():
    return applicants(300, seed=3)


@pytest.fixture(scope="session")
def credit_pipeline(credit_frame):
    """The demo pipeline (one-hot encoder + gradient boosting), cut to a few trees.

    Registration deserialises the artifact; with the demo's 120 trees that
    alone would cost a third of a second in every test.
    """
    pipeline = train_model(credit_frame)
    pipeline.set_params(model__n_estimators=10)
    return pipeline.fit(credit_frame[FEATURES], credit_frame["outcome"])


@pytest.fixture(scope="session")
def skops_artifact(credit_pipeline) -> bytes:
    return skops.io.dumps(credit_pipeline)


@pytest.fixture(scope="session")
def joblib_artifact(credit_pipeline) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(credit_pipeline, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def background_csv(credit_frame) -> bytes:
    return credit_frame[FEATURES].head(60).to_csv(index=False).encode()


# --- the test database ------------------------------------------------------


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database; before it is dropped, the connections to it that
    other threads opened and left open (one of the live server's request threads, in the
    browser tests) are ended and named in a warning. Left open, PostgreSQL waits five
    seconds for them at the end of each test process, then refuses to drop the database."""
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT left(query, 80), pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        ended = [query for query, _ in cursor.fetchall()]
    if ended:
        warnings.warn(
            f"{len(ended)} connection(s) to the test database were still open at its end "
            f"(their last statements: {ended}); ended",
            stacklevel=1,
        )


# --- files and broker --------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def empty_test_broker_queue():
    """Tests that commit enqueue explanation tasks; no worker reads the test folder."""
    yield
    options = getattr(django_settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    if django_settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for message in Path(options["data_folder_in"]).glob("*.msg"):
            message.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Artifacts and backgrounds of each test go to its own directory."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


# --- users -------------------------------------------------------------------


@pytest.fixture
def role_groups(db):
    """The role groups, which a data migration creates.

    A transactional test (transaction=True without serialized_rollback) flushes
    every table, these groups included; tests that run after it still need them.
    tests/accounts/test_commands.py checks the migration itself.
    """
    Group.objects.bulk_create([Group(name=name) for name in roles.ROLES], ignore_conflicts=True)


@pytest.fixture
def admin(role_groups):
    return create_user("admin", roles.ADMIN, password=PASSWORD)


@pytest.fixture
def ml_engineer(role_groups):
    return create_user("ml_engineer", roles.ML_ENGINEER, password=PASSWORD)


@pytest.fixture
def compliance_officer(role_groups):
    return create_user("compliance_officer", roles.COMPLIANCE_OFFICER, password=PASSWORD)


@pytest.fixture
def domain_expert(role_groups):
    """Assigned to the credit model by the `model_version` fixture."""
    return create_user("domain_expert", roles.DOMAIN_EXPERT, password=PASSWORD)


@pytest.fixture
def auditor(role_groups):
    return create_user("auditor", roles.AUDITOR, password=PASSWORD)


@pytest.fixture
def outsider(role_groups):
    """A domain expert who is not assigned to the credit model."""
    return create_user("outsider", roles.DOMAIN_EXPERT, password=PASSWORD)


@pytest.fixture
def no_role(db):
    return get_user_model().objects.create_user("no_role", password=PASSWORD)


@pytest.fixture
def users(admin, ml_engineer, compliance_officer, domain_expert, auditor, outsider, no_role):
    """Every user by label (see ROLE_USERS); "anonymous" maps to None."""
    return {
        "admin": admin,
        "ml_engineer": ml_engineer,
        "compliance_officer": compliance_officer,
        "domain_expert": domain_expert,
        "auditor": auditor,
        "outsider": outsider,
        "no_role": no_role,
        "anonymous": None,
    }


# --- clients -----------------------------------------------------------------


@pytest.fixture
def api_client() -> Callable[..., APIClient]:
    """A DRF client acting as `user` (None: anonymous)."""

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user=user)
        return client

    return make


@pytest.fixture
def token_client(db):
    """A DRF client sending `Authorization: Token <key>` for a new token of `user`."""

    def make(user, scopes: list[str], models: list[str] | None = None, **options):
        token, key = create_api_token(user, scopes=scopes, model_names=models, **options)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client, token

    return make


# --- registry and decisions --------------------------------------------------


@pytest.fixture
def register(skops_artifact, background_csv):
    """Register a credit model version through the real service."""

    def make(user, *, name=MODEL_NAME, version=VERSION, **overrides) -> ModelVersion:
        upload = VersionUpload(
            name=name,
            version=version,
            artifact=skops_artifact,
            artifact_format="skops",
            schema=credit_schema(),
            background=background_csv,
            card=MODEL_CARD,
        )
        for key, value in overrides.items():
            setattr(upload, key, value)
        return register_model_version(roles.Actor(user=user), upload)

    return make


@pytest.fixture
def model_version(register, ml_engineer, domain_expert) -> ModelVersion:
    """credit v1, registered by the ML engineer; the domain expert is assigned to it."""
    version = register(ml_engineer)
    assign_models(domain_expert, [MODEL_NAME])
    return version


@pytest.fixture
def ingest(ml_engineer):
    """Record decisions through the real service, as the ML engineer unless told otherwise."""

    def record(*items: dict, user=None) -> list[dict]:
        actor = roles.Actor(user=user or ml_engineer)
        return record_decisions(actor, {"decisions": list(items)}, source="api")

    return record


@pytest.fixture
def decision(model_version, ingest) -> Decision:
    (result,) = ingest(DecisionPayloadFactory())
    return Decision.objects.get(pk=result["id"])


@pytest.fixture
def worker(request, media_root, tmp_path):
    """A real Celery worker on an empty broker; stopped, and the broker emptied, afterwards.

    It serves every queue, or only those a `worker_queues` mark names: a test of one flow
    (a report, a verification job) then does not wait while the worker explains the
    decisions it recorded, which it never reads."""
    celery_app.control.purge()
    mark = request.node.get_closest_marker("worker_queues")
    started = Worker(media_root, tmp_path / "worker.log", queues=mark.args if mark else ())
    yield started
    started.stop()
    publishing.wait_until_published()
    celery_app.control.purge()
