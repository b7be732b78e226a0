"""Decisions, audit events and explanation results partitioned by month on PostgreSQL."""

from __future__ import annotations

import json
from contextlib import contextmanager
from unittest import mock

import psycopg
import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from auditapp import encryption, partitions
from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.decisions import services as decision_services
from auditapp.decisions.models import Decision, Outcome
from auditapp.decisions.outcomes import record_outcomes
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.tasks import create_partitions_ahead
from auditapp.decisions.verification import verify_chain
from auditapp.errors import Conflict
from explain import batches, claims, explainers
from explain.models import Explanation, ExplanationResult
from explain.results import insert_results
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="the embedded SQLite default is not partitioned"
)
TABLE = "decisions_decision"
EVENTS = "accounts_auditevent"
SEALS = "decisions_seal"
RESULTS = "explain_explanationresult"


def this_month() -> tuple[int, int]:
    return partitions.utc_month()


def partition_of(row_id: int, table: str = TABLE) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {table} WHERE id = %s", [row_id])
        return cursor.fetchone()[0]


def event_ids() -> list[int]:
    return list(AuditEvent.objects.order_by("id").values_list("id", flat=True))


def test_month_bases_stay_in_json_safe_integers():
    assert partitions.base(2026, 12) == 202_612_000_000_000
    assert partitions.month_of_id(partitions.base(2026, 12) + 5) == (2026, 12)
    assert partitions.month_of_id(partitions.base(2027, 1) - 1) == (2026, 12)
    assert partitions.base(9999, 12) < 2**53


@pytest.mark.django_db
def test_new_decisions_get_ids_of_this_month_in_order(model_version, ingest):
    batch = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(4))]  # COPY
    (single,) = [r["id"] for r in ingest(DecisionPayloadFactory())]  # INSERT

    ids = [*batch, single]
    assert ids == sorted(ids) and len(set(ids)) == 5
    year, month = this_month()
    assert all(
        partitions.base(year, month) < i < partitions.base(*partitions.next_month(year, month))
        for i in ids
    )
    assert {partition_of(i) for i in ids} == {partitions.partition_name(TABLE, year, month)}
    assert Decision.objects.filter(pk__in=ids).count() == 5
    # audit events too (accounts.0008)
    ingested = AuditEvent.objects.filter(action="decisions.ingested").order_by("id")
    assert [partition_of(e.pk, EVENTS) for e in ingested] == [
        partitions.partition_name(EVENTS, year, month)
    ] * 2


@pytest.mark.django_db
def test_a_request_id_is_unique_per_model_across_partitions(model_version, ingest):
    first = DecisionPayloadFactory()
    (created,) = ingest(first)
    assert ingest(first) == [{**created, "status": "duplicate"}]
    with pytest.raises(Conflict):  # other content (a fixed score could be the first's own)
        ingest({**first, "metadata": {"channel": "another branch"}})
    with (
        pytest.raises(IntegrityError, match="decisions_decision_unique_pkey"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            f"INSERT INTO {TABLE} (registered_model_id, model_version_id, request_id, inputs, "
            "prediction, predicted_at, recorded_at, source, metadata, content_hash, client) "
            f"SELECT registered_model_id, model_version_id, request_id, inputs, prediction, "
            f"predicted_at, recorded_at, source, metadata, content_hash, client FROM {TABLE} "
            "WHERE id = %s",
            [created["id"]],
        )


def test_a_reused_request_id_refuses_the_whole_batch_and_keeps_no_key_of_it(model_version, ingest):
    """The keys are kept once per statement (a row-level trigger cost an INSERT a decision):
    a batch holding one used request_id stores neither its decisions nor their keys."""
    (created,) = ingest(DecisionPayloadFactory())
    fresh = DecisionPayloadFactory()["request_id"]
    columns = (
        "registered_model_id, model_version_id, inputs, prediction, predicted_at, recorded_at, "
        "source, metadata, content_hash, client"
    )
    with (
        pytest.raises(IntegrityError, match="decisions_decision_unique_pkey"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            f"INSERT INTO {TABLE} (request_id, {columns}) "
            f"SELECT key, {columns} FROM {TABLE}, unnest(ARRAY[%s, request_id]) AS key "
            "WHERE id = %s",
            [fresh, created["id"]],
        )
    assert not Decision.objects.filter(request_id=fresh).exists()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {TABLE}_unique WHERE request_id = %s", [fresh])
        assert cursor.fetchone() == (0,)
        cursor.execute(
            "SELECT tgtype & 1 FROM pg_trigger WHERE tgname = %s", [f"{TABLE}_unique_key"]
        )
        assert cursor.fetchall() == [(0,)]  # TRIGGER_TYPE_ROW unset: once per statement


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement", ["UPDATE {t} SET score = 0", "DELETE FROM {t}", "TRUNCATE {t} CASCADE"]
)
def test_the_parent_and_each_partition_refuse_changes(decision, statement):
    """Row triggers fire on rows: the legacy partition (empty here) is tried further down."""
    tables = [TABLE, partitions.partition_name(TABLE, *this_month())]
    if statement.startswith("TRUNCATE"):
        tables.append(TABLE + "_legacy")
    for table in tables:
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending checks before TRUNCATE
            cursor.execute(statement.format(t=table))


@pytest.mark.django_db
def test_an_insert_in_a_month_without_partition_fails_saying_so(model_version, ingest):
    year, month = this_month()
    name = partitions.partition_name(TABLE, year, month)
    with connection.cursor() as cursor:  # as if beat had not run for months
        # (foreign keys to decisions pin a partition: it is detached before it can go)
        cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
        cursor.execute(f"DROP TABLE {name}")  # its id sequence too
    expected = f"no partition of decisions_decision for the month {year:04d}-{month:02d}"
    with pytest.raises(DatabaseError, match=expected):
        ingest(*DecisionPayloadFactory.build_batch(2))
    with pytest.raises(DatabaseError, match=expected):
        ingest(DecisionPayloadFactory())


@pytest.mark.django_db
def test_the_beat_task_creates_months_ahead_once():
    year, month = this_month()
    assert create_partitions_ahead() == []  # the migration made this month and the next ones
    further = partitions.months_from(year, month, partitions.AHEAD + 3)[-2:]
    assert partitions.create_ahead(TABLE, partitions.AHEAD + 2) == [
        partitions.partition_name(TABLE, y, m) for y, m in further
    ]
    assert partitions.create_ahead(TABLE, partitions.AHEAD + 2) == []
    assert partitions.create_ahead(TABLE, 1, today=(2031, 12)) == [
        f"{TABLE}_p203112",
        f"{TABLE}_p203201",
    ]
    assert partitions.create_ahead(TABLE, 1, today=(2031, 12)) == []
    bounds = {p.name: (p.lower, p.upper) for p in partitions.partitions(TABLE)}
    assert bounds[f"{TABLE}_p203201"] == (partitions.base(2032, 1), partitions.base(2032, 2))
    assert bounds[f"{TABLE}_legacy"][0] is None


def parent_analyzed_rows(table: str) -> float:
    """The row count the planner knows of a partitioned table (-1: never analyzed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_the_beat_task_keeps_the_parents_statistics(model_version, ingest):
    """Autovacuum never analyzes a partitioned table; without the parent's statistics
    PostgreSQL planned the plain search as a sort of the whole period (0.7 s at a
    million decisions, against 0.2 ms)."""
    ingest(*DecisionPayloadFactory.build_batch(30))
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE pg_class SET reltuples = -1 WHERE oid = '{TABLE}'::regclass")

    create_partitions_ahead()

    assert parent_analyzed_rows(TABLE) == 30
    assert parent_analyzed_rows(EVENTS) >= 1 and parent_analyzed_rows(RESULTS) >= 0


@pytest.mark.django_db
def test_creating_a_partition_gives_up_behind_a_long_reader(monkeypatch):
    """Rather than queue every insert behind its wait for the table; the next run creates it."""
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "200ms")
    params = {k: v for k, v in connection.get_connection_params().items() if k != "context"}
    with psycopg.connect(**params) as reader:  # a verification reading decisions, say
        reader.execute(f"SELECT count(*) FROM {TABLE}")
        with pytest.raises(OperationalError, match="lock timeout"):
            partitions.create_ahead(TABLE, 1, today=(2031, 12))
    assert partitions.create_ahead(TABLE, 1, today=(2031, 12)) == [
        f"{TABLE}_p203112",
        f"{TABLE}_p203201",
    ]


@pytest.mark.django_db
def test_every_foreign_key_to_decisions_points_at_the_parent():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = %s::regclass AND conparentid = 0",
            [TABLE],
        )
        referrers = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
            "AND confrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass) "
            "AND conparentid = 0",
            [TABLE],
        )
        (to_partitions,) = cursor.fetchone()
    assert {
        "decisions_outcome",
        "reviews_feedback",
        "reviews_reviewcase",
        "reviews_override",
        "reports_report",
        "explain_explanation",
        "explain_explanationresult",
        "explain_topreasons",
    } <= referrers
    assert to_partitions == 0


# --- the migration, on a database that holds decisions ----------------------------------


@contextmanager
def recorded_before_form_2():
    """Today's code records decisions as it did before document form 2 (decisions.0014):
    sensitive inputs committed to, the others hashed in clear, no form."""
    with mock.patch.object(decision_services, "COMMITTED_FORM", None):
        yield


@contextmanager
def columns_of_today():
    """The decision columns added after partitioning (decisions.0012: arm, served_by; 0014:
    document_form, kept_commitments; 0016: sealed_inputs, sensitive_tokens) and the seals'
    `cut` (0015), there for today's code to write the rows of then (null, as then), and gone
    again before the migrations run forward and add them. Rows of then held their sensitive
    inputs in clear: today's sealed ones are put back in `inputs` (as the superuser, past
    the append-only trigger) before their column goes. The id function today's store
    draws ids with before it inserts is there too, drawing the identity's (partitioning
    replaces it)."""
    added = (
        "arm varchar(10) NULL",
        "served_by bigint NULL",
        "document_form smallint NULL",
        "kept_commitments jsonb NULL",
        "sealed_inputs bytea NULL",
        "sensitive_tokens jsonb NULL",
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {TABLE} " + ", ".join(f"ADD COLUMN {c}" for c in added))
        cursor.execute(f"ALTER TABLE {SEALS} ADD COLUMN cut boolean NULL")
        cursor.execute(
            f"CREATE FUNCTION {TABLE}_next_id() RETURNS bigint LANGUAGE sql "
            f"AS $$ SELECT nextval(pg_get_serial_sequence('{TABLE}', 'id')) $$"
        )
    try:
        with recorded_before_form_2():
            yield
    finally:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, registered_model_id, request_id, inputs::text, sealed_inputs "
                f"FROM {TABLE} WHERE sealed_inputs IS NOT NULL"
            )
            rows = [
                (
                    json.dumps(
                        encryption.merged(
                            json.loads(inputs), bytes(sealed), encryption.row_binding(model, rid)
                        )
                    ),
                    pk,
                )
                for pk, model, rid, inputs, sealed in cursor.fetchall()
            ]
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.executemany(f"UPDATE {TABLE} SET inputs = %s::jsonb WHERE id = %s", rows)
        with connection.cursor() as cursor:
            names = ", ".join(f"DROP COLUMN {c.split()[0]}" for c in added)
            cursor.execute(f"ALTER TABLE {TABLE} {names}")
            cursor.execute(f"ALTER TABLE {SEALS} DROP COLUMN cut")
            cursor.execute(f"DROP FUNCTION {TABLE}_next_id()")


def ingest_one_by_one(ingest, count: int) -> list[int]:
    """One decision a request, as a single ingestion stores them. Approved ones:
    an adverse decision gets a counterfactual work row, whose table (explain.0009) the
    schema of before partitioning does not have."""
    return [ingest(DecisionPayloadFactory(prediction="good"))[0]["id"] for _ in range(count)]


def outcome(user, decision_id: int) -> None:
    item = {"decision_id": decision_id, "outcome": "bad", "observed_at": "2026-11-20T10:00:00Z"}
    record_outcomes(roles.Actor(user=user), {"outcomes": [item]})


def store_shap_before_top_reasons(model_version, decision_id: int) -> None:
    """A SHAP result as the workers store one, less its top reasons: their table comes
    with a migration (explain.0012) later than the one this test starts from."""
    claimed = claims.claim(model_version.pk, "shap", [decision_id])
    context, explainer = explainers.cached_explainer(model_version, "shap")
    computed = batches.explain_claimed(context, explainer, "shap", claimed, False, 1e-3)
    (stored,) = insert_results(
        model_version, "shap", [(decision_id, computed[0])], 1.0, timezone.now()
    )
    Explanation.objects.filter(pk=claimed[0].id).update(status="done", result_id=stored.id)


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_existing_decisions_and_their_log(model_version, ingest, ml_engineer):
    call_command("migrate", "decisions", "0009", verbosity=0)
    call_command("migrate", "accounts", "0007", verbosity=0)
    call_command("migrate", "explain", "0007", verbosity=0)
    try:
        assert not any(map(partitions.is_partitioned, (TABLE, EVENTS, RESULTS)))
        with columns_of_today():
            old = ingest_one_by_one(ingest, 3)
            store_shap_before_top_reasons(model_version, old[0])
            assert old == sorted(old) and max(old) < partitions.base(
                2000, 1
            )  # the former identity's ids
            outcome(ml_engineer, old[0])
            seal_new_records()
            hashes = dict(Decision.objects.values_list("id", "content_hash"))
            events = dict(AuditEvent.objects.values_list("id", "content_hash"))
        call_command("migrate", verbosity=0)
        assert parent_analyzed_rows(TABLE) == len(old)  # the planner knows the new parent
    finally:
        call_command("migrate", verbosity=0)

    assert all(map(partitions.is_partitioned, (TABLE, EVENTS, RESULTS)))
    assert dict(Decision.objects.values_list("id", "content_hash")) == hashes
    assert dict(AuditEvent.objects.values_list("id", "content_hash")) == events
    assert {partition_of(i) for i in old} == {TABLE + "_legacy"}
    assert {partition_of(i, EVENTS) for i in events} == {EVENTS + "_legacy"}
    year, month = this_month()
    new = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(3))]
    assert min(new) >= partitions.base(year, month) > max(old)
    assert {partition_of(i) for i in new} == {partitions.partition_name(TABLE, year, month)}
    # Events had ids of this month already (the test database was partitioned, then
    # taken back): the legacy partition reaches into the month, which starts after it.
    new_events = [i for i in event_ids() if i not in events]
    assert new_events and min(new_events) > max(events)
    assert {partition_of(i, EVENTS) for i in new_events} == {
        partitions.partition_name(EVENTS, year, month)
    }

    # a request_id recorded before the migration is still known
    first = Decision.objects.get(pk=old[0])
    again = {
        **DecisionPayloadFactory(),
        "request_id": first.request_id,
        "inputs": first.full_inputs(),
        "prediction": first.prediction,
        "score": first.score,
        "predicted_at": first.predicted_at.isoformat(),
        "subject_ref": first.subject_ref,
        "metadata": first.metadata,
    }
    assert ingest(again)[0] == {"request_id": first.request_id, "id": old[0], "status": "duplicate"}

    with pytest.raises(DatabaseError, match="append-only"), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE}_legacy WHERE id = %s", [old[1]])

    # foreign keys are checked against every partition, and only those
    outcome(ml_engineer, new[0])
    assert Outcome.objects.filter(decision_id__in=[old[0], new[0]]).count() == 2
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        Outcome.objects.create(
            decision_id=max(new) + 1, outcome="x", observed_at="2026-11-01T00:00Z"
        )

    # explanation results (explain.0008): the one from before stays, a new one is this month's
    batches.run_batch(model_version.pk, "shap", [new[0]])
    (before,) = ExplanationResult.objects.filter(decision_id=old[0])
    (after,) = ExplanationResult.objects.filter(decision_id=new[0])
    assert partition_of(before.pk, RESULTS) == RESULTS + "_legacy"
    assert partition_of(after.pk, RESULTS) == partitions.partition_name(RESULTS, year, month)

    seal_new_records()
    for processes in (False, True):  # in processes: id ranges skip the gap between months
        result = verify_chain(processes=processes)
        assert result.ok, result.first_bad
        assert (result.decisions, result.unsealed_decisions) == (6, 0)
        assert (result.events, result.unsealed_events) == (len(event_ids()), 0)
        assert result.records["explanation"] == 2
