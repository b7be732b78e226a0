"""Retiring an expired month (issue 16): its decisions and every row referring to them go,
after a sealed declaration; verification names what was retired and still catches the rest.

Runs on PostgreSQL and SQLite; what only PostgreSQL has (partitions, triggers) is
skipped on SQLite.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from contextlib import contextmanager

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from auditapp import partitions
from auditapp.accounts import records, roles
from auditapp.accounts.models import AuditEvent, LogRecord
from auditapp.decisions import merkle, proofs, retention
from auditapp.decisions.models import Decision, Outcome, RetiredRange, Retirement, Seal
from auditapp.decisions.outcomes import record_outcomes
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.verification import disjoint, verify_chain
from auditapp.errors import Conflict, InvalidInput
from auditapp.reports.models import Report
from auditapp.reviews.models import CaseEvent, Feedback, Override, ReviewCase
from auditapp.reviews.services import flag_decision, resolve_case, submit_feedback, take_case
from explain import batches, counterfactual_batches
from explain.models import (
    CounterfactualResult,
    CounterfactualWork,
    Explanation,
    ExplanationResult,
    TopReasons,
)
from tests.decisions.test_partitions import columns_of_today
from tests.decisions.test_sealing import tampering
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db
postgresql_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="partitions and triggers are PostgreSQL's"
)
TABLE, RESULTS = "decisions_decision", "explain_explanationresult"
# Every model whose rows refer to a decision, with the rows made for each below.
REFERRERS = (Outcome, Feedback, ReviewCase, CaseEvent, Override, Explanation, ExplanationResult)
REFERRERS += (TopReasons, Report, CounterfactualWork, CounterfactualResult)


def months_back(count: int) -> tuple[int, int]:
    year, month = partitions.utc_month()
    for _ in range(count):
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return year, month


def label(month: tuple[int, int]) -> str:
    return f"{month[0]:04d}-{month[1]:02d}"


def mid(month: tuple[int, int]) -> str:
    return dt.datetime(*month, 15, 12, tzinfo=dt.UTC).isoformat()


def rows_of(model) -> set[int]:
    return set(model._base_manager.values_list("pk", flat=True))


def snapshot() -> dict[str, set[int]]:
    return {model.__name__: rows_of(model) for model in (Decision, *REFERRERS)}


def with_everything(actors, model_version, ids: list[int]) -> None:
    """An outcome, feedback, a case taken and overridden, explanations, a notice, per decision."""
    engineer, expert, officer = actors
    now = timezone.now().isoformat()
    record_outcomes(
        engineer,
        {"outcomes": [{"decision_id": i, "outcome": "bad", "observed_at": now} for i in ids]},
    )
    batches.run_batch(model_version.pk, "shap", ids)
    counterfactual_batches.run_batch(model_version.pk, ids)
    for decision in Decision.objects.filter(pk__in=ids):
        submit_feedback(expert, decision, {"verdict": "disagree", "comment": "misread"})
        case = flag_decision(expert, decision, "Looks wrong")
        take_case(expert, case)
        resolve_case(expert, case, "overridden", outcome="good", rationale="Income misread.")
        Report.objects.create(
            kind=Report.NOTICE,
            format="pdf",
            parameters={"decision_id": decision.pk},
            registered_model=model_version.registered_model,
            model_version=model_version,
            decision=decision,
            requested_by=officer.user,
        )


@pytest.fixture
def actors(ml_engineer, domain_expert, compliance_officer):
    return (
        roles.Actor(user=ml_engineer),
        roles.Actor(user=domain_expert),
        roles.Actor(user=compliance_officer),
    )


@pytest.fixture
def three_months(model_version, ingest, actors):
    """Decisions predicted two months ago (to retire), and three and one month ago (kept),
    each with everything that refers to a decision; all sealed, the log verified."""
    target, before, after = months_back(2), months_back(3), months_back(1)
    made = {}
    for month, count in ((before, 2), (target, 3), (after, 2)):
        # declined (score 0.8): each gets counterfactuals, rows that refer to a decision too
        items = DecisionPayloadFactory.build_batch(count, predicted_at=mid(month), score=0.8)
        made[month] = [row["id"] for row in ingest(*items)]
    with_everything(actors, model_version, made[target] + made[after][:1])
    seal_new_records()
    assert verify_chain().ok
    return target, made


def retired_ranges_hold(declaration: Retirement, table: str, ids: list[int]) -> bool:
    ranges = declaration.tables[table]["ranges"]
    return all(any(a <= i <= b for a, b in ranges) for i in ids)


def test_every_model_referring_to_a_decision_is_found():
    found = {model for model, _, _ in retention.referrers(retention.Q(pk=0))}
    assert found == {Decision, *REFERRERS}
    order = [model for model, _, _ in retention.referrers(retention.Q(pk=0))]
    assert order[-1] is Decision and order.index(CaseEvent) < order.index(ReviewCase)
    assert order.index(Explanation) < order.index(ExplanationResult)


def test_ranges_that_overlap_or_touch_are_declared_as_one():
    """A run of legacy rows can reach across a detached partition's range: the triggers read
    the one range starting nearest below an id, so none may hide inside another."""
    assert retention._merged([(300, 499), (100, 900), (901, 950), (990, 999)]) == [
        (100, 950),
        (990, 999),
    ]


def test_a_missing_row_counts_to_the_earliest_declaration_covering_it():
    """A month partition detached after an earlier month's rows inside it went: its whole
    range overlaps the earlier declaration's, whose rows stay counted to it."""
    assert disjoint([(101, 200, 1), (100, 999, 2), (300, 300, 3)]) == [
        (100, 100, 2),
        (101, 200, 1),
        (201, 999, 2),
    ]
    assert disjoint([(1, 5, 2), (6, 9, 2)]) == [(1, 9, 2)]


def test_a_dry_run_says_what_would_go_and_changes_nothing(three_months):
    target, made = three_months
    before = snapshot()
    out = io.StringIO()
    call_command("retire_month", label(target), "--dry-run", stdout=out)

    text = out.getvalue()
    first, last = min(made[target]), max(made[target])
    assert f"Would retire {label(target)}: the decisions predicted in it" in text
    assert f"  {TABLE}: 3 decisions, ids {first}-{last}" in text
    assert "decisions_outcome: 3 outcomes" in text
    assert "reviews_caseevent: " in text and "reports_report: 3 reports" in text
    assert text.rstrip().endswith("Dry run: nothing was changed.")
    if connection.vendor == "postgresql":
        # this month's partition holds the kept months too: rows deleted, partition stays
        this_month = partitions.partition_name(TABLE, *partitions.utc_month())
        assert f"{this_month} stays (4 other rows), the month's rows deleted" in text
        assert f"{TABLE}_unique: 3 request-id keys" in text
    else:
        assert "SQLite: nothing is partitioned; rows are deleted by id range." in text
    assert snapshot() == before
    assert not Retirement.objects.exists()


def test_a_month_retires_with_everything_referring_to_it_and_verification_says_so(
    three_months, model_version, api_client, compliance_officer
):
    target, made = three_months
    gone, kept_ids = made[target], [i for m, ids in made.items() if m != target for i in ids]
    before = snapshot()
    going = {
        model.__name__: rows_of(model) - set(kept_rows(model, kept_ids)) for model in REFERRERS
    }
    assert all(going.values())  # each kind of row exists for the month's decisions

    plan = retention.retire_month(roles.system_actor(), *target)

    after = snapshot()
    assert after["Decision"] == before["Decision"] - set(gone)
    assert set(kept_ids) <= after["Decision"]
    for model in REFERRERS:
        name = model.__name__
        assert after[name] == before[name] - going[name], name
        assert set(kept_rows(model, kept_ids)) <= after[name]  # the kept month's untouched
    declaration = plan.declaration
    assert declaration is not None and declaration.month == label(target)
    assert declaration.tables[TABLE]["rows"] == 3
    assert declaration.tables["decisions_outcome"]["rows"] == 3
    assert retired_ranges_hold(declaration, TABLE, gone)
    assert not retired_ranges_hold(declaration, TABLE, kept_ids[:1])
    assert RetiredRange.objects.filter(retirement=declaration, table_name=TABLE).exists()
    assert LogRecord.objects.filter(kind="retirement", object_id=declaration.pk).count() == 1
    (event,) = AuditEvent.objects.filter(action="decisions.retired")
    assert event.details["declaration"] == declaration.pk
    assert event.details["rows"][TABLE] == 3
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {TABLE}_unique")
            keys = {row[0] for row in cursor.fetchall()}
        assert keys == after["Decision"]
        assert declaration.mode == Retirement.DELETE  # the rows share this month's partition

    seal_new_records()
    result = verify_chain()
    assert result.ok, result.first_bad
    (retired,) = result.retired
    stamp = f"{declaration.declared_at:%Y-%m-%d %H:%M}"
    assert retired["summary"] == (
        f"3 decisions of {label(target)} retired on {stamp} UTC by declaration "
        f"#{declaration.pk} (system (manage.py))"
    )
    assert result.decisions == len(after["Decision"])

    # the API and the command say it too, and the log's kept records still prove
    answer = api_client(compliance_officer).get("/api/v1/audit/verify").json()
    assert answer["ok"] is True and answer["retired"][0]["summary"] == retired["summary"]
    assert answer["retired"][0]["rows"][TABLE] == 3
    out = io.StringIO()
    call_command("verify_chain", "--no-progress", stdout=out)
    assert f"Retired: {retired['summary']}." in out.getvalue()
    assert "OK: every record and seal matches." in out.getvalue()
    kept = Decision.objects.get(pk=kept_ids[0])
    assert proofs.inclusion_holds(proofs.inclusion_proof(kept))
    first, latest = Seal.objects.order_by("index").first(), Seal.objects.order_by("index").last()
    proof = proofs.consistency_proof(roles.system_actor(), first.tree_size, latest.tree_size)
    assert merkle.verify_consistency(
        proof["first"],
        proof["second"],
        bytes.fromhex(proof["first_root"]),
        bytes.fromhex(proof["second_root"]),
        [bytes.fromhex(node) for node in proof["consistency_proof"]],
    )

    # nothing is left of the month to retire again
    with pytest.raises(Conflict, match=f"Nothing of {label(target)} is left to retire"):
        retention.retire_month(roles.system_actor(), *target)


def kept_rows(model, decision_ids: list[int]) -> list[int]:
    """The rows of a referring model that belong to the given decisions."""
    lookup = {m: q for m, q, _ in retention.referrers(retention.Q(pk__in=decision_ids))}
    return list(model._base_manager.filter(lookup[model]).values_list("pk", flat=True))


def test_a_deletion_outside_any_declaration_is_still_a_mismatch(three_months):
    target, made = three_months
    retention.retire_month(roles.system_actor(), *target)
    seal_new_records()
    assert verify_chain().ok
    kept = made[months_back(3)][0]
    with tampering() as cursor:  # the database's own way round the triggers, no declaration
        cursor.execute("DELETE FROM explain_explanation WHERE decision_id = %s", [kept])
        cursor.execute("DELETE FROM explain_counterfactualwork WHERE decision_id = %s", [kept])
        cursor.execute(f"DELETE FROM {TABLE} WHERE id = %s", [kept])

    result = verify_chain()
    assert not result.ok
    assert result.first_bad["kind"] == "decision" and result.first_bad["id"] == kept
    assert result.first_bad["reason"] == "it was deleted"
    assert len(result.retired) == 1  # the declared ones still are retired, not deleted


def test_a_referring_row_deleted_outside_the_declaration_is_named(three_months):
    target, made = three_months
    retention.retire_month(roles.system_actor(), *target)
    (outcome,) = Outcome.objects.filter(decision_id=made[months_back(1)][0])
    with tampering() as cursor:
        cursor.execute("DELETE FROM decisions_outcome WHERE id = %s", [outcome.pk])
    seal_new_records()
    result = verify_chain()
    assert not result.ok
    bad = result.first_bad
    assert (bad["kind"], bad["id"]) == ("outcome", outcome.pk)
    assert bad["reason"] == "it was deleted: its record remains"


def test_a_declaration_widened_afterwards_to_hide_a_deletion_is_named(three_months):
    """Someone with the database widens a sealed declaration over a kept decision and
    deletes it: the declaration no longer matches its record, nor its count."""
    target, made = three_months
    plan = retention.retire_month(roles.system_actor(), *target)
    seal_new_records()
    victim = made[months_back(1)][1]
    tables = plan.declaration.tables
    tables[TABLE]["ranges"].append([victim, victim])
    with tampering() as cursor:
        cursor.execute(
            "UPDATE decisions_retirement SET tables = %s WHERE id = %s",
            [json.dumps(tables), plan.declaration.pk],
        )
        cursor.execute("DELETE FROM explain_explanation WHERE decision_id = %s", [victim])
        cursor.execute("DELETE FROM explain_counterfactualwork WHERE decision_id = %s", [victim])
        cursor.execute(f"DELETE FROM {TABLE} WHERE id = %s", [victim])

    result = verify_chain()
    assert not result.ok
    reasons = {(p["kind"], p["id"], p["reason"]) for p in result.problems()}
    assert (
        "retirement",
        plan.declaration.pk,
        "its stored fields do not match its latest record",
    ) in reasons
    assert (
        "retirement",
        plan.declaration.pk,
        f"declaration #{plan.declaration.pk} of {label(target)} retired 3 rows of {TABLE}, "
        "but 4 are missing from it",
    ) in reasons


def test_the_current_month_and_later_ones_are_refused(three_months):
    for month in (partitions.utc_month(), partitions.next_month(*partitions.utc_month())):
        with pytest.raises(InvalidInput, match=f"{label(month)} is not over"):
            retention.retire_month(roles.system_actor(), *month)
    with pytest.raises(CommandError, match="is not over: only a month before the current one"):
        call_command("retire_month", label(partitions.utc_month()), stdout=io.StringIO())
    with pytest.raises(CommandError, match="'2026-13' is not a month: write it YYYY-MM"):
        call_command("retire_month", "2026-13", "--dry-run", stdout=io.StringIO())
    assert not Retirement.objects.exists()


def test_decisions_not_sealed_yet_are_sealed_before_they_go(model_version, ingest):
    target = months_back(2)
    ingest(*DecisionPayloadFactory.build_batch(2, predicted_at=mid(target)))
    assert not Seal.objects.exists()

    plan = retention.retire_month(roles.system_actor(), *target)

    assert not Decision.objects.exists() and plan.declaration.tables[TABLE]["rows"] == 2
    seal = Seal.objects.order_by("index").first()
    assert seal.decision_count == 2  # in the log before they went
    record = LogRecord.objects.get(kind="retirement", object_id=plan.declaration.pk)
    assert record.pk <= Seal.objects.order_by("index").last().last_record_id  # sealed too
    seal_new_records()
    result = verify_chain()
    assert result.ok, result.first_bad
    assert result.retired[0]["summary"].startswith(f"2 decisions of {label(target)} retired")


# --- PostgreSQL: the triggers' one bypass, partitions detached or dropped ---------------


@contextmanager
def retirement_setting(value: str):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('attest.retirement', %s, true)", [value])
        yield cursor


@postgresql_only
def test_the_bypass_without_a_declaration_of_this_transaction_is_refused(three_months):
    target, made = three_months
    victim = made[months_back(3)][0]
    # a setting naming no declaration
    with pytest.raises(DatabaseError, match="append-only"), retirement_setting("999999") as c:
        c.execute(f"DELETE FROM {TABLE} WHERE id = %s", [victim])
    # a declaration covering the row, but written before this transaction began
    old = Retirement.objects.create(
        month=label(months_back(3)),
        declared_at=timezone.now() - dt.timedelta(days=1),
        actor_name="someone",
        mode=Retirement.DELETE,
        tables={},
    )
    RetiredRange.objects.create(retirement=old, table_name=TABLE, first_id=victim, last_id=victim)
    with pytest.raises(DatabaseError, match="in no range"), retirement_setting(str(old.pk)) as c:
        c.execute(f"DELETE FROM {TABLE} WHERE id = %s", [victim])
    # one of this transaction, but not sealed
    with connection.cursor() as cursor:
        cursor.execute("SELECT transaction_timestamp()")
        (now,) = cursor.fetchone()
    fresh = Retirement.objects.create(
        month=label(months_back(3)), declared_at=now, mode=Retirement.DELETE, tables={}
    )
    RetiredRange.objects.create(retirement=fresh, table_name=TABLE, first_id=victim, last_id=victim)
    records.append("retirement", [fresh.pk])
    with pytest.raises(DatabaseError, match="in no range"), retirement_setting(str(fresh.pk)) as c:
        c.execute(f"DELETE FROM {TABLE} WHERE id = %s", [victim])
    # this transaction's declaration opens its ranges only, and never an UPDATE
    plan = retention.retire_month(roles.system_actor(), *target)
    declared = str(plan.declaration.pk)
    with pytest.raises(DatabaseError, match="in no range"), retirement_setting(declared) as c:
        c.execute(f"DELETE FROM {TABLE} WHERE id = %s", [victim])
    with pytest.raises(DatabaseError, match="UPDATE refused"), retirement_setting(declared) as c:
        c.execute(f"UPDATE {TABLE} SET score = 0 WHERE id = %s", [victim])
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as c,
    ):
        c.execute(f"DELETE FROM {RetiredRange._meta.db_table}")
    assert Decision.objects.filter(pk=victim).exists()


@contextmanager
def ids_of_month(month: tuple[int, int]):
    """Decisions inserted meanwhile draw ids of another month, as if the database's clock said
    so (for their id function only: the log's other rows keep growing in id order): the test
    database has no past month but its legacy partition."""
    moment = f"'{dt.datetime(*month, 15, tzinfo=dt.UTC).isoformat()}'::timestamptz"
    tables = [TABLE]

    def define(clock: str) -> None:
        with connection.cursor() as cursor:
            for table in tables:
                sql = partitions.NEXT_ID_FUNCTION.format(table=table, span=partitions.MONTH_SPAN)
                cursor.execute(sql.replace("clock_timestamp()", clock))

    define(moment)
    try:
        yield
    finally:
        define("clock_timestamp()")


def partitions_of(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass",
            [table],
        )
        return {row[0] for row in cursor.fetchall()}


def exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return cursor.fetchone()[0]


def count(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        return cursor.fetchone()[0]


@postgresql_only
@pytest.mark.parametrize("drop", [False, True], ids=["detach", "drop"])
def test_a_month_whose_partition_holds_only_its_rows_is_detached_or_dropped(
    model_version, ingest, actors, drop
):
    """This month played as a past one (`today`: the next); a later month's rows are kept."""
    month = partitions.utc_month()
    later = partitions.next_month(*month)
    now = max(timezone.now() - dt.timedelta(seconds=5), dt.datetime(*month, 1, tzinfo=dt.UTC))
    # an older month recorded in this one, retired first: deleted by id from the partition
    ingest(*DecisionPayloadFactory.build_batch(2, predicted_at=mid(months_back(2))))
    gone = [
        r["id"]
        for r in ingest(*DecisionPayloadFactory.build_batch(3, predicted_at=now.isoformat()))
    ]
    with_everything(actors, model_version, gone)
    first = retention.retire_month(roles.system_actor(), *months_back(2))
    assert first.declaration.mode == Retirement.DELETE
    with ids_of_month(later):  # decisions of an earlier month, recorded later (an import)
        items = DecisionPayloadFactory.build_batch(2, predicted_at=mid(months_back(1)))
        kept = [r["id"] for r in ingest(*items)]
    seal_new_records()
    name, results = (
        partitions.partition_name(TABLE, *month),
        partitions.partition_name(RESULTS, *month),
    )
    assert {name, partitions.partition_name(TABLE, *later)} <= partitions_of(TABLE)

    plan = retention.retire_month(roles.system_actor(), *month, drop=drop, today=later)

    assert name not in partitions_of(TABLE) and results not in partitions_of(RESULTS)
    assert partitions.partition_name(TABLE, *later) in partitions_of(TABLE)
    if drop:
        assert not exists(name) and not exists(results)
        assert plan.declaration.mode == Retirement.DROP
    else:
        assert count(name + "_retired") == 3 and count(results + "_retired") == 3
        assert plan.declaration.mode == Retirement.DETACH
    assert set(Decision.objects.values_list("pk", flat=True)) == set(kept)
    assert not ExplanationResult.objects.exists() and not Outcome.objects.exists()
    declared = plan.declaration.tables[TABLE]
    ((_, lower, _upper),) = plan.decisions.partitions
    assert declared["partitions"] == [name] and declared["rows"] == 3
    assert declared["ranges"] == [[lower, partitions.base(*later) - 1]]
    # the events of the month stay: they are the access log, not the month's decisions
    assert partitions.partition_name("accounts_auditevent", *month) in partitions_of(
        "accounts_auditevent"
    )
    # beat's task does not bring the retired month back
    assert name not in partitions.create_ahead(TABLE, today=later)
    assert name not in partitions_of(TABLE)

    seal_new_records()
    result = verify_chain()
    assert result.ok, result.first_bad
    # the detached range covers the older month's rows too: they stay counted to theirs
    assert [r["summary"].split(" retired on ")[0] for r in result.retired] == [
        f"2 decisions of {label(months_back(2))}",
        f"3 decisions of {label(month)}",
    ]


@postgresql_only
def test_a_detach_behind_a_long_reader_gives_up_and_retires_nothing(
    model_version, ingest, monkeypatch
):
    month = partitions.utc_month()
    later = partitions.next_month(*month)
    now = max(timezone.now() - dt.timedelta(seconds=5), dt.datetime(*month, 1, tzinfo=dt.UTC))
    ingest(*DecisionPayloadFactory.build_batch(2, predicted_at=now.isoformat()))
    seal_new_records()
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "200ms")
    params = {k: v for k, v in connection.get_connection_params().items() if k != "context"}
    with psycopg.connect(**params) as reader:  # a verification reading decisions, say
        reader.execute(f"SELECT count(*) FROM {TABLE}")
        busy = r"is busy \(a long reader, a verification\?\): detaching .* gave up after 200ms"
        with pytest.raises(Conflict, match=busy):
            retention.retire_month(roles.system_actor(), *month, today=later)
    assert Decision.objects.count() == 2 and not Retirement.objects.exists()
    assert partitions.partition_name(TABLE, *month) in partitions_of(TABLE)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_months_rows_in_the_legacy_partition_are_deleted_by_id_range(
    model_version, ingest, ml_engineer
):
    """Decisions recorded before partitioning live in `<table>_legacy`: the month's go by id
    through the triggers' one bypass, the partition stays, and verification holds."""
    target, other = months_back(2), months_back(1)
    call_command("migrate", "decisions", "0009", verbosity=0)
    call_command("migrate", "accounts", "0007", verbosity=0)
    call_command("migrate", "explain", "0007", verbosity=0)
    try:
        with columns_of_today():
            old = {}
            for month in (target, other, target):  # interleaved: two ranges of the month
                # approved: an adverse decision gets a counterfactual work row, whose table
                # (explain.0009) the schema before partitioning does not have
                payload = DecisionPayloadFactory(predicted_at=mid(month), prediction="good")
                old.setdefault(month, []).append(ingest(payload)[0]["id"])
            record_outcomes(
                roles.Actor(user=ml_engineer),
                {
                    "outcomes": [
                        {"decision_id": i, "outcome": "bad", "observed_at": mid(other)}
                        for ids in old.values()
                        for i in ids
                    ]
                },
            )
            seal_new_records()
    finally:
        call_command("migrate", verbosity=0)
    legacy = f"{TABLE}_legacy"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {legacy}")
        assert cursor.fetchone()[0] == 3

    plan = retention.retire_month(roles.system_actor(), *target)

    (first, second), (kept,) = old[target], old[other]
    assert plan.declaration.tables[TABLE]["ranges"] == [[first, first], [second, second]]
    assert plan.declaration.tables[TABLE]["partitions"] == []
    assert set(Decision.objects.values_list("pk", flat=True)) == {kept}
    assert list(Outcome.objects.values_list("decision_id", flat=True)) == [kept]
    assert legacy in partitions_of(TABLE)
    seal_new_records()
    result = verify_chain()
    assert result.ok, result.first_bad
    assert result.retired[0]["summary"].startswith(f"2 decisions of {label(target)} retired")
