"""Records are append-only: below the application on PostgreSQL, in the model layer everywhere."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent, LogRecord
from auditapp.appendonly import AppendOnlyError
from auditapp.decisions.models import Decision, Outcome, Seal
from auditapp.decisions.outcomes import record_outcomes
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.tasks import seal_records
from auditapp.registry.models import StageChange
from auditapp.reviews.models import CaseEvent, Feedback, Override, ReviewCase
from auditapp.reviews.services import flag_decision, resolve_case, submit_feedback
from explain import batches
from explain.models import ExplanationConfig, ExplanationResult

pytestmark = pytest.mark.django_db

TABLES = [
    "decisions_decision",
    "decisions_outcome",
    "decisions_seal",
    "accounts_auditevent",
    "reviews_feedback",
    "reviews_caseevent",
    "reviews_override",
    "registry_stagechange",
    "accounts_logrecord",
    "explain_explanationresult",
    "explain_explanationconfig",
]


@pytest.fixture
def records(decision, domain_expert, ml_engineer):
    """A row in every append-only table: decision, outcome, feedback, case history, override,
    audit events and a seal (row triggers only fire on rows, so none may be empty)."""
    record_outcomes(
        roles.Actor(user=ml_engineer),
        {
            "outcomes": [
                {
                    "decision_id": decision.pk,
                    "model": "credit",
                    "outcome": "bad",
                    "observed_at": "2026-11-20T10:00:00Z",
                }
            ]
        },
    )
    expert = roles.Actor(user=domain_expert)
    submit_feedback(expert, decision, {"verdict": "agree"})
    case = flag_decision(expert, decision, "income looks mistyped")
    resolve_case(expert, case, ReviewCase.OVERRIDDEN, outcome="good", rationale="payslips")
    batches.run_batch(decision.model_version_id, "shap", [decision.pk])  # a result
    seal_new_records()
    return decision


def refused(sql: str) -> str:
    """The database's error for `sql`, which must be refused."""
    with pytest.raises(DatabaseError) as error, transaction.atomic(), connection.cursor() as cur:
        cur.execute(sql)
    return str(error.value)


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.parametrize("table", TABLES)
def test_postgresql_triggers_refuse_update_delete_and_truncate(records, table):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        before = cursor.fetchone()[0]

    assert "append-only (UPDATE refused)" in refused(f"UPDATE {table} SET id = id")
    assert "append-only (DELETE refused)" in refused(f"DELETE FROM {table}")
    # The test's own transaction has deferred foreign-key checks pending: settle them first.
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    # CASCADE reaches other append-only tables too; whichever trigger fires first refuses.
    assert "append-only (TRUNCATE refused)" in refused(f"TRUNCATE {table} CASCADE")

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        assert cursor.fetchone()[0] == before


@pytest.mark.parametrize(
    "model",
    [
        Decision,
        Outcome,
        Feedback,
        CaseEvent,
        Override,
        AuditEvent,
        Seal,
        StageChange,
        LogRecord,
        ExplanationResult,
        ExplanationConfig,
    ],
)
def test_the_model_layer_refuses_changes_on_every_database(records, model):
    row = model.objects.first()
    assert row is not None

    with pytest.raises(AppendOnlyError):
        row.save()
    with pytest.raises(AppendOnlyError):
        row.delete()
    with pytest.raises(AppendOnlyError):
        model.objects.all().update(pk=row.pk)
    with pytest.raises(AppendOnlyError):
        model.objects.all().delete()
    assert model.objects.filter(pk=row.pk).exists()


def test_the_sealing_task_keeps_its_wire_name_and_seals(decision):
    assert seal_records.name == "audit.seal"
    assert seal_records.apply().get() == 1
    assert Seal.objects.get().last_decision_id == decision.pk
