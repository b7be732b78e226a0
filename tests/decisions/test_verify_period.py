"""verify_period: one version's decisions of a period checked against the sealed log, as a
compliance report's integrity section claims; what it leaves to verify_chain, it leaves."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from auditapp import snapshots
from auditapp.decisions import rehashing
from auditapp.decisions.models import Decision
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.verification import (
    CHANGED,
    CHANGED_UNSEALED,
    verify_chain,
    verify_period,
)
from tests.decisions.test_sealing import skip_ids, tampering
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC).replace(microsecond=0)
START, END = NOW - timedelta(days=2), NOW  # the period: the last two days


def recorded(ingest, *ages_in_hours: float) -> list[int]:
    """Decisions predicted that many hours ago, their ids."""
    items = [
        DecisionPayloadFactory(predicted_at=(NOW - timedelta(hours=age)).isoformat())
        for age in ages_in_hours
    ]
    return [row["id"] for row in ingest(*items)]


@pytest.fixture
def log(model_version, ingest):
    """Sealed: two decisions before the period, three in it; then two in it not sealed yet."""
    before = recorded(ingest, 80, 70)
    sealed = recorded(ingest, 30, 20, 10)
    seal_new_records()
    unsealed = recorded(ingest, 5, 1)
    return {"before": before, "sealed": sealed, "unsealed": unsealed}


def test_the_periods_decisions_verify(log, model_version):
    result = verify_period(model_version.pk, START, END)

    assert result.ok, result.first_bad
    assert result.decisions == 5  # the period's only
    assert result.unsealed_decisions == 2
    assert result.seals == 1
    assert (result.events, result.records) == (0, {})  # not checked here
    assert result.latest_seal is not None


def test_a_sealed_decision_of_the_period_edited_is_named(log, model_version):
    with tampering() as cursor:
        cursor.execute(
            "UPDATE decisions_decision SET score = 0.015 WHERE id = %s", [log["sealed"][1]]
        )

    result = verify_period(model_version.pk, START, END)

    assert not result.ok
    assert result.first_bad == {
        "kind": "decision",
        "id": log["sealed"][1],
        "seal": 0,
        "reason": CHANGED,
    }


def test_an_unsealed_decision_of_the_period_edited_is_named(log, model_version):
    with tampering() as cursor:
        cursor.execute(
            "UPDATE decisions_decision SET metadata = '{}' WHERE id = %s", [log["unsealed"][0]]
        )

    bad = verify_period(model_version.pk, START, END).first_bad

    assert (bad["id"], bad["seal"], bad["reason"]) == (log["unsealed"][0], None, CHANGED_UNSEALED)


def test_a_content_hash_column_rewritten_to_match_is_named(log, model_version):
    """Recomputing the hash and writing it beside the edit does not pass: the seal holds it."""
    target = log["sealed"][0]
    with tampering() as cursor:
        cursor.execute(
            "UPDATE decisions_decision SET content_hash = %s WHERE id = %s", ["0" * 64, target]
        )

    bad = verify_period(model_version.pk, START, END).first_bad

    assert (bad["id"], bad["reason"]) == (target, "its content_hash column was changed")


def test_an_edit_outside_the_period_is_left_to_verify_chain_and_a_deletion_is_not(
    log, model_version
):
    """What the report's section says it does not check (other periods' decisions) it does
    not; a sealed decision deleted, from whatever period, is named."""
    with tampering() as cursor:
        cursor.execute(
            "UPDATE decisions_decision SET score = 0.015 WHERE id = %s", [log["before"][0]]
        )
    assert verify_period(model_version.pk, START, END).ok
    assert verify_chain().first_bad["id"] == log["before"][0]

    with tampering() as cursor:
        gone = log["before"][1]
        cursor.execute("DELETE FROM explain_explanation WHERE decision_id = %s", [gone])
        cursor.execute("DELETE FROM explain_counterfactualwork WHERE decision_id = %s", [gone])
        cursor.execute(
            "DELETE FROM reviews_caseevent WHERE case_id IN "
            "(SELECT id FROM reviews_reviewcase WHERE decision_id = %s)",
            [gone],
        )
        cursor.execute("DELETE FROM reviews_reviewcase WHERE decision_id = %s", [gone])
        cursor.execute("DELETE FROM decisions_decision WHERE id = %s", [gone])
    result = verify_period(model_version.pk, START, END)
    assert result.first_bad == {
        "kind": "decision",
        "id": log["before"][1],
        "seal": 0,
        "reason": "it was deleted",
    }


def test_a_decision_inserted_inside_a_sealed_range_of_the_period_is_named(model_version, ingest):
    first = recorded(ingest, 10)
    skip_ids(5)
    recorded(ingest, 9)
    seal_new_records()
    forged = first[0] + 2
    with tampering() as cursor:
        columns = (
            "registered_model_id, model_version_id, request_id, subject_ref, inputs, "
            "prediction, score, predicted_at, recorded_at, source, metadata, content_hash, "
            "recorded_by_id, client"
        )
        cursor.execute(
            f"INSERT INTO decisions_decision (id, {columns}) SELECT %s, "
            + columns.replace("request_id", "'forged'")
            + " FROM decisions_decision WHERE id = %s",
            [forged, first[0]],
        )

    result = verify_period(model_version.pk, START, END)

    assert result.decisions == 3
    reasons = {(p["id"], p["reason"]) for p in result.problems()}
    assert (forged, "it was inserted inside a sealed range") in reasons
    assert (forged, "no ingestion event recorded it: it was not written by Attest") in reasons


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.django_db(transaction=True)
def test_the_period_is_hashed_in_processes_outside_a_transaction(
    model_version, ingest, monkeypatch
):
    monkeypatch.setattr(rehashing, "RANGE", 2)  # several tasks, some outside the period
    before = recorded(ingest, 70, 60, 50)
    inside = recorded(ingest, 30, 20, 10, 5)
    seal_new_records()
    assert not connection.in_atomic_block and rehashing._can_use_processes()

    result = verify_period(model_version.pk, START, END, processes=True)
    assert result.ok, result.first_bad
    assert (result.decisions, result.unsealed_decisions) == (4, 0)

    with tampering() as cursor:
        cursor.execute("UPDATE decisions_decision SET score = 0.505 WHERE id = %s", [inside[2]])
        cursor.execute("UPDATE decisions_decision SET score = 0.505 WHERE id = %s", [before[1]])
    bad = verify_period(model_version.pk, START, END, processes=True).first_bad
    assert (bad["id"], bad["reason"]) == (inside[2], CHANGED)
    assert Decision.objects.count() == 7


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.django_db(transaction=True)
def test_inside_one_moment_the_rows_are_read_ahead_in_its_exported_snapshot(
    model_version, ingest, monkeypatch
):
    """A report verifies inside its snapshot: a second connection reads ahead in that same
    snapshot, so a decision committed meanwhile is not counted, as by the report's sections."""
    monkeypatch.setattr(rehashing, "CHUNK", 2)  # several read-ahead chunks
    inside = recorded(ingest, 30, 20, 10, 5, 1)
    seal_new_records()
    exported = []
    export = snapshots.exported_snapshot
    monkeypatch.setattr(
        rehashing, "exported_snapshot", lambda: exported.append(export()) or exported[-1]
    )

    with snapshots.one_moment():
        assert Decision.objects.count() == 5
        meanwhile = threading.Thread(target=lambda: (recorded(ingest, 2), connection.close()))
        meanwhile.start()
        meanwhile.join()
        result = verify_period(model_version.pk, START, END)

    assert exported and exported[0]  # read in the exported snapshot
    assert result.ok, result.first_bad
    assert result.decisions == len(inside) == 5
    assert verify_period(model_version.pk, START, END).decisions == 6  # committed since
