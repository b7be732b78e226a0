"""Opt-in feature indexes: built on request, used by the search, dropped on request."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.http import QueryDict

from auditapp import partitions
from auditapp.accounts import roles
from auditapp.accounts.event_sentences import describe
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.feature_indexes import feature_indexes, index_name
from auditapp.decisions.models import Decision
from auditapp.dossier.filters import filter_decisions
from tests.conftest import embedded_default
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db(transaction=True)
postgresql_only = pytest.mark.skipif(embedded_default(), reason="feature indexes are PostgreSQL's")


def run(*args: str) -> str:
    out = StringIO()
    call_command("index_feature", *args, stdout=out)
    return out.getvalue()


def search(actor, **params) -> list[int]:
    query = QueryDict(mutable=True)
    query.update({"model": "credit", **params})
    queryset = filter_decisions(Decision.objects.all(), query, actor)
    return sorted(queryset.values_list("pk", flat=True)), queryset


@postgresql_only
def test_an_index_is_built_used_by_the_search_and_dropped(
    model_version, ingest, compliance_officer
):
    ingest(*DecisionPayloadFactory.build_batch(40))
    actor = roles.Actor(user=compliance_officer)
    rich = sorted(d.pk for d in Decision.objects.all() if d.inputs["debt_ratio"] >= 0.5)
    before, _ = search(actor, **{"feature.debt_ratio__gte": "0.5"})
    assert before == rich

    output = run("credit", "debt_ratio")
    name = index_name(model_version.registered_model_id, "debt_ratio")
    assert f"{name}: " in output and output.rstrip().endswith("ready.")
    (index,) = feature_indexes()
    assert (index.model, index.feature, index.valid) == ("credit", "debt_ratio", True)
    assert "credit.debt_ratio" in run()
    event = AuditEvent.objects.get(action="search_index.created")
    assert event.details["feature"] == "debt_ratio" and event.details["index"] == name
    assert describe(event).text() == "system (manage.py) indexed feature debt_ratio of model credit"

    after, queryset = search(actor, **{"feature.debt_ratio__gte": "1e9"})
    assert after == []
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")  # a table this small is read whole otherwise
        plan = queryset.explain()
        cursor.execute("RESET enable_seqscan")
    assert name in plan, plan
    assert search(actor, **{"feature.debt_ratio__gte": "0.5"})[0] == rich  # same answers

    assert run("credit", "debt_ratio", "--drop") == "Dropped the index on credit.debt_ratio.\n"
    assert feature_indexes() == []
    assert AuditEvent.objects.filter(action="search_index.dropped").count() == 1
    assert run("credit", "debt_ratio", "--drop") == "There was no index on credit.debt_ratio.\n"


@postgresql_only
def test_the_planner_takes_the_index_for_a_value_no_one_has_without_being_pushed(
    model_version, ingest, compliance_officer
):
    """With the table's statistics as ANALYZE leaves them, and a page's LIMIT: a JSON
    range gave PostgreSQL no estimate but a third of the rows, so it walked the time
    index to the end instead (0.5 s at a million decisions)."""
    ingest(*DecisionPayloadFactory.build_batch(400))
    actor = roles.Actor(user=compliance_officer)
    run("credit", "debt_ratio")
    try:
        found, queryset = search(actor, **{"feature.debt_ratio__gte": "1e9"})
        plan = queryset.order_by("-predicted_at", "-pk")[:51].explain()
    finally:
        run("credit", "debt_ratio", "--drop")  # indexes outlive the test's data

    assert found == []
    assert index_name(model_version.registered_model_id, "debt_ratio") in plan, plan
    mid = sorted(d.inputs["debt_ratio"] for d in Decision.objects.all())[200]
    assert search(actor, **{"feature.debt_ratio__gte": str(mid)})[0] == sorted(
        d.pk for d in Decision.objects.all() if d.inputs["debt_ratio"] >= mid
    )


@postgresql_only
def test_an_unknown_model_or_feature_is_named(model_version):
    with pytest.raises(CommandError, match="There is no model 'fraud'"):
        run("fraud", "income")
    with pytest.raises(CommandError, match="'salary' is not a feature of 'credit'; its features"):
        run("credit", "salary")
    with pytest.raises(
        CommandError, match="'income' is sensitive: its values are stored encrypted"
    ):
        run("credit", "income")
    with pytest.raises(CommandError, match="Name the feature too"):
        run("credit")
    assert feature_indexes() == []


@pytest.mark.skipif(not embedded_default(), reason="the embedded default's answer")
def test_the_embedded_default_says_it_searches_without_them(model_version):
    with pytest.raises(CommandError, match="Feature indexes are for PostgreSQL"):
        run("credit", "debt_ratio")


def drop_partitions(table: str, names: list[str]) -> None:
    """DDL outlives a transactional test's flush: the months it made would stay for the next
    test of this process (tests/decisions/test_sealing.py counts every table's partitions)."""
    with connection.cursor() as cursor:
        for name in names:
            # (foreign keys to decisions pin a partition: it is detached before it can go)
            cursor.execute(f"ALTER TABLE {table} DETACH PARTITION {name}")
            cursor.execute(f"DROP TABLE {name}")  # its id sequence too


@postgresql_only
def test_on_partitioned_decisions_each_partition_gets_the_index(model_version, ingest, request):
    """Built concurrently on each partition, attached; a month created later inherits it."""
    ingest(*DecisionPayloadFactory.build_batch(3))
    run("credit", "debt_ratio")
    name = index_name(model_version.registered_model_id, "debt_ratio")
    created = partitions.create_ahead("decisions_decision", 1, today=(2031, 12))
    request.addfinalizer(lambda: drop_partitions("decisions_decision", created))

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, p.relname FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_index x ON x.indexrelid = c.oid "
            "JOIN pg_class p ON p.oid = x.indrelid WHERE i.inhparent = %s::regclass",
            [name],
        )
        indexed = dict(cursor.fetchall())
    names = [p.name for p in partitions.partitions("decisions_decision")]
    assert sorted(indexed.values()) == sorted(names)
    month = partitions.partition_name("decisions_decision", *partitions.utc_month())
    assert indexed[name + month.removeprefix("decisions_decision")] == month
    assert set(created) <= set(indexed.values())
    (index,) = feature_indexes()
    assert index.valid and index.size_bytes > 0
    # The expression's statistics too, on the table and every partition, later ones included.
    assert statistics_on() == {"decisions_decision", *names}

    run("credit", "debt_ratio")  # again: nothing to build, nothing breaks
    assert run("credit", "debt_ratio", "--drop") == "Dropped the index on credit.debt_ratio.\n"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname LIKE %s", [name + "%"])
        assert cursor.fetchone()[0] == 0
    assert statistics_on() == set()


def statistics_on() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT stxrelid::regclass::text FROM pg_statistic_ext WHERE stxname LIKE %s",
            ["decisions\\_feature\\_%"],
        )
        return {row[0] for row in cursor.fetchall()}
