"""The log: seals, verification against every tamper scenario, exported seals, proofs.

Tampering goes through raw SQL, as someone with database access would do it;
on PostgreSQL with the append-only triggers switched off for the session, as a
superuser can.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from auditapp import partitions
from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent, LogRecord
from auditapp.decisions import merkle, rehashing
from auditapp.decisions.models import Decision, Seal
from auditapp.decisions.proofs import inclusion_holds, inclusion_proof
from auditapp.decisions.sealing import (
    MAX_SEAL_ROWS,
    exported_seal,
    latest_seal,
    seal_new_records,
)
from auditapp.decisions.verification import _Clock, verify_chain
from auditapp.errors import NotFound
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db


@contextmanager
def tampering():
    """A cursor that can change append-only rows (triggers off on PostgreSQL)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("SET session_replication_role = DEFAULT")


def decision_ids(ingest, count: int) -> list[int]:
    return [row["id"] for row in ingest(*DecisionPayloadFactory.build_batch(count))]


@pytest.fixture
def sealed(model_version, ingest):
    """Two seals over eight decisions and the audit events so far."""
    first = decision_ids(ingest, 5)
    seal_new_records()
    second = decision_ids(ingest, 3)
    seal_new_records()
    return first + second


def log_leaves() -> list[bytes]:
    """The leaf data of the whole log, as the README defines it, rebuilt from the rows."""
    leaves, after = [], {"decision": 0, "event": 0, "record": 0}
    for seal in Seal.objects.order_by("index"):
        for kind, model, prefix in (
            ("decision", Decision, b""),
            ("event", AuditEvent, b"event:"),
            ("record", LogRecord, b"record:"),
        ):
            last = getattr(seal, f"last_{kind}_id") or 0
            rows = model.objects.filter(pk__gt=after[kind], pk__lte=last).order_by("id")
            leaves += [
                prefix + bytes.fromhex(h) for h in rows.values_list("content_hash", flat=True)
            ]
            after[kind] = last
    return leaves


def test_seals_append_every_decision_then_event_to_one_tree(sealed):
    seals = list(Seal.objects.order_by("index"))

    assert [s.index for s in seals] == [0, 1]
    assert seals[0].first_leaf == 0 and seals[1].first_leaf == seals[0].tree_size
    assert seals[0].decision_count + seals[1].decision_count == Decision.objects.count() == 8
    assert seals[1].last_decision_id == sealed[-1]
    assert seals[1].last_event_id == AuditEvent.objects.order_by("id").last().pk
    assert seals[1].tree_size == (
        Decision.objects.count() + AuditEvent.objects.count() + LogRecord.objects.count()
    )
    assert LogRecord.objects.count() == 2  # the version's registration and its first stage
    leaves = log_leaves()
    assert len(leaves) == seals[1].tree_size
    for seal in seals:
        assert seal.root_hash == merkle.root(leaves[: seal.tree_size]).hex()
    assert seal_new_records() == []  # nothing new since


def test_an_untouched_chain_verifies(sealed):
    record_event("test.unsealed")

    result = verify_chain()

    assert result.ok, result.first_bad
    assert (result.decisions, result.seals) == (8, 2)
    assert result.events == AuditEvent.objects.count()
    assert result.unsealed_events == 1
    assert result.latest_seal == exported_seal(latest_seal())


def test_a_field_edited_behind_the_applications_back_is_named(sealed):
    with tampering() as cursor:
        cursor.execute(
            "UPDATE decisions_decision SET score = 0.015 WHERE id IN (%s, %s)",
            [sealed[2], sealed[6]],
        )

    bad = verify_chain().first_bad

    assert bad["kind"] == "decision"
    assert bad["id"] == sealed[2]
    assert "do not match the content hash it was sealed with" in bad["reason"]


def test_a_deleted_decision_is_named(sealed):
    with tampering() as cursor:
        cursor.execute("DELETE FROM explain_explanation WHERE decision_id = %s", [sealed[3]])
        cursor.execute("DELETE FROM explain_counterfactualwork WHERE decision_id = %s", [sealed[3]])
        cursor.execute(
            "DELETE FROM reviews_caseevent WHERE case_id IN "
            "(SELECT id FROM reviews_reviewcase WHERE decision_id = %s)",
            [sealed[3]],
        )
        cursor.execute("DELETE FROM reviews_reviewcase WHERE decision_id = %s", [sealed[3]])
        cursor.execute("DELETE FROM decisions_decision WHERE id = %s", [sealed[3]])

    result = verify_chain()

    assert not result.ok
    assert result.first_bad == {
        "kind": "decision",
        "id": sealed[3],
        "seal": 0,
        "reason": "it was deleted",
    }


def test_a_decision_inserted_inside_a_sealed_range_is_named(model_version, ingest):
    first = decision_ids(ingest, 2)
    skip_ids(5)
    later = decision_ids(ingest, 2)
    seal_new_records()
    forged = first[-1] + 2
    assert forged < later[0]
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

    bad = verify_chain().first_bad

    assert (bad["kind"], bad["id"]) == ("decision", forged)
    assert bad["reason"] == "it was inserted inside a sealed range"


def skip_ids(count: int) -> None:
    """Leave a gap in the decision ids, as rolled-back transactions do."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # This month's sequence: ids are its values offset by the month's base.
            month = partitions.utc_month()
            cursor.execute(
                "SELECT setval(%s, (SELECT max(id) FROM decisions_decision) - %s + %s)",
                [
                    partitions.sequence_name("decisions_decision", *month),
                    partitions.base(*month),
                    count,
                ],
            )
        else:
            cursor.execute(
                "UPDATE sqlite_sequence SET seq = seq + %s WHERE name = 'decisions_decision'",
                [count],
            )


def test_reordered_decisions_are_named(sealed):
    """Two rows swap every field, stored hash included: each still hashes to itself."""
    a, b = sealed[1], sealed[2]
    fields = "request_id, inputs, prediction, score, predicted_at, recorded_at, content_hash"
    with tampering() as cursor:
        cursor.execute(f"SELECT {fields} FROM decisions_decision WHERE id = %s", [a])
        row_a = cursor.fetchone()
        cursor.execute(f"SELECT {fields} FROM decisions_decision WHERE id = %s", [b])
        row_b = cursor.fetchone()
        assignments = ", ".join(f"{name.strip()} = %s" for name in fields.split(","))
        cursor.execute("UPDATE decisions_decision SET request_id = 'swap' WHERE id = %s", [a])
        cursor.execute(f"UPDATE decisions_decision SET {assignments} WHERE id = %s", [*row_a, b])
        cursor.execute(f"UPDATE decisions_decision SET {assignments} WHERE id = %s", [*row_b, a])

    bad = verify_chain().first_bad

    assert (bad["kind"], bad["id"], bad["seal"]) == ("decision", a, 0)


def test_an_altered_seal_is_named(sealed):
    with tampering() as cursor:
        cursor.execute('UPDATE decisions_seal SET decision_count = 4 WHERE "index" = 0')

    bad = verify_chain().first_bad

    assert bad == {
        "kind": "seal",
        "index": 0,
        "reason": "its decision leaves do not match its decision count",
    }


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("root_hash = %s", "its root_hash does not match the log's leaves"),
        (
            "sealed_at = sealed_at + interval '1 second'",
            "its signature does not match its tree head",
        ),
        ("signature = %s", "its signature does not match its tree head"),
        ("key_id = 'ffffffffffffffff'", "it is signed by another key"),
        ("nodes = %s", "its stored tree nodes do not match the log's leaves"),
    ],
)
def test_a_seal_whose_tree_head_or_signature_was_altered_is_named(sealed, change, reason):
    seal = Seal.objects.get(index=1)
    values = {
        "root_hash = %s": ["0" * 64],
        "signature = %s": [Seal.objects.get(index=0).signature],
        "nodes = %s": [b"\x00" * 32],
    }.get(change, [])
    if "interval" in change and connection.vendor != "postgresql":
        change = "sealed_at = datetime(sealed_at, '+1 second')"
    with tampering() as cursor:
        cursor.execute(f'UPDATE decisions_seal SET {change} WHERE "index" = 1', values)

    bad = verify_chain().first_bad

    assert (bad["kind"], bad["index"]) == ("seal", seal.index)
    assert bad["reason"].startswith(reason)


def test_an_edited_audit_event_is_named(sealed):
    event = AuditEvent.objects.order_by("id")[1]
    with tampering() as cursor:
        cursor.execute(
            "UPDATE accounts_auditevent SET actor_name = 'someone else' WHERE id = %s", [event.pk]
        )

    bad = verify_chain().first_bad

    assert (bad["kind"], bad["id"]) == ("event", event.pk)


def test_a_rewritten_chain_passes_alone_but_fails_against_the_exported_seal(sealed, tmp_path):
    """Someone who recomputes every hash and seal (with the key) is caught by the kept seal."""
    kept = exported_seal(Seal.objects.get(index=0))
    target = Decision.objects.get(pk=sealed[0])
    target.score = 0.505
    with tampering() as cursor:
        cursor.execute(
            "UPDATE decisions_decision SET score = 0.505, content_hash = %s WHERE id = %s",
            [target.compute_content_hash(), target.pk],
        )
        cursor.execute("DELETE FROM decisions_seal")
    seal_new_records()

    assert verify_chain().ok  # the rewrite is consistent in itself
    result = verify_chain(against=kept)

    assert not result.ok
    assert result.first_bad["kind"] == "seal"
    assert result.first_bad["tree_size"] == kept["tree_size"]
    assert result.first_bad["reason"] in (
        "the kept seal is missing from the log",
        "it differs from the kept copy: the log was rewritten up to here",
    )


def test_the_exported_seal_checks_out_on_an_intact_chain(sealed):
    kept = json.loads(json.dumps(exported_seal(Seal.objects.get(index=0))))
    result = verify_chain(against=kept)

    assert result.ok
    assert result.checked_against == {
        "tree_size": kept["tree_size"],
        "root_hash": kept["root_hash"],
    }


def test_a_forged_kept_seal_is_refused(sealed):
    kept = exported_seal(latest_seal())
    kept["root_hash"] = "ab" * 32

    bad = verify_chain(against=kept).first_bad

    assert bad["reason"] == "the kept seal's signature does not match its tree head"


def test_a_seal_kept_from_the_former_hash_chain_is_still_checked(sealed):
    """Seals exported before the log was one tree named their index and seal_hash."""
    from auditapp.decisions.verification import chain_seal_hashes

    (hash_0, hash_1) = chain_seal_hashes(list(Seal.objects.order_by("index")))
    kept = {"attest_seal": 1, "index": 1, "seal_hash": hash_1}

    assert verify_chain(against=kept).ok
    bad = verify_chain(against={**kept, "seal_hash": hash_0}).first_bad
    assert bad["reason"] == "it differs from the kept copy: the log was rewritten up to here"


def test_each_sealed_decision_has_an_inclusion_proof_in_every_later_seal(sealed):
    decision = Decision.objects.get(pk=sealed[6])
    leaves = log_leaves()
    first, latest = Seal.objects.order_by("index")

    proof = inclusion_proof(decision)

    assert inclusion_holds(proof)
    assert (proof["leaf_index"], proof["tree_size"]) == (first.tree_size + 1, latest.tree_size)
    assert proof["root_hash"] == latest.root_hash
    assert proof["content_hash"] == decision.content_hash
    assert proof["audit_path"] == [
        p.hex() for p in merkle.inclusion_proof(leaves, proof["leaf_index"])
    ]
    early = inclusion_proof(Decision.objects.get(pk=sealed[0]), tree_size=first.tree_size)
    assert inclusion_holds(early) and early["root_hash"] == first.root_hash


def test_an_unsealed_decision_says_so(model_version, ingest):
    (decision_id,) = decision_ids(ingest, 1)

    with pytest.raises(NotFound, match="not sealed yet"):
        inclusion_proof(Decision.objects.get(pk=decision_id))


def test_seals_split_large_backlogs(model_version, ingest):
    decision_ids(ingest, 7)

    seals = seal_new_records(max_rows=3)

    assert [s.decision_count for s in seals] == [3, 3, 1]
    assert [s.cut for s in seals] == [True, True, False]
    assert verify_chain().ok


def clock_of(*seals: tuple[int, bool | None]) -> _Clock:
    """A clock over seals made at these minutes past 10:00, cut (a part of a backlog) or not."""
    return _Clock(
        [
            Seal(index=i, sealed_at=TEN + timedelta(minutes=minute), cut=cut, decision_count=1)
            for i, (minute, cut) in enumerate(seals)
        ]
    )


TEN = datetime(2026, 12, 1, 10, tzinfo=UTC)


def test_a_row_of_a_later_part_of_a_backlog_follows_the_last_whole_seal(settings):
    """A backlog sealed an hour late, in parts one after the other: a row of the second
    part was recorded at 10:10, long before the first part was made at 11:00. It follows
    seal 0 (whole, 10:00), not the part before it."""
    settings.ATTEST_LOG_CLOCK_TOLERANCE = 300
    clock = clock_of((0, False), (60, True), (60, False))
    at = TEN + timedelta(minutes=10)

    assert clock.problem(at, None, 2) is None
    assert clock.problem(at, None, 1) is None
    assert "before seal 0" in clock.problem(TEN - timedelta(hours=1), None, 2)


def test_a_row_after_a_backlog_dated_before_its_last_part_is_backdated(settings):
    settings.ATTEST_LOG_CLOCK_TOLERANCE = 300
    clock = clock_of((0, False), (60, True), (60, False))

    problem = clock.problem(TEN + timedelta(minutes=10), None, None)  # not sealed yet

    assert problem is not None and "before seal 2" in problem and "backdated" in problem


def test_seals_from_before_cut_was_kept_count_as_parts_when_a_kind_filled_the_limit(settings):
    settings.ATTEST_LOG_CLOCK_TOLERANCE = 300
    full = Seal(index=1, sealed_at=TEN + timedelta(hours=1), decision_count=MAX_SEAL_ROWS)
    seals = [
        Seal(index=0, sealed_at=TEN, decision_count=5),
        full,
        Seal(index=2, sealed_at=TEN + timedelta(hours=1), decision_count=3),
    ]
    assert [s.cut for s in seals] == [None, None, None]

    assert _Clock(seals).problem(TEN + timedelta(minutes=10), None, 2) is None


class TestVerifyChainCommand:
    def test_it_exits_0_on_an_intact_chain_and_exports_the_seal(self, sealed, tmp_path, capsys):
        out = tmp_path / "seal.json"

        call_command("verify_chain", "--no-progress", "--export-seal", str(out))

        assert "OK: every record and seal matches." in capsys.readouterr().out
        assert json.loads(out.read_text()) == exported_seal(latest_seal())
        event = AuditEvent.objects.filter(action="chain.verified").first()
        assert event.details["ok"] is True and event.actor_name == "system (manage.py)"

    def test_it_exits_1_naming_the_first_mismatch(self, sealed, tmp_path, capsys):
        kept = tmp_path / "kept.json"
        kept.write_text(json.dumps(exported_seal(latest_seal())))
        with tampering() as cursor:
            cursor.execute(
                "UPDATE decisions_decision SET subject_ref = 'x' WHERE id = %s", [sealed[4]]
            )

        with pytest.raises(SystemExit) as exit_info:
            call_command("verify_chain", "--no-progress", "--against", str(kept))

        assert exit_info.value.code == 1
        assert f"MISMATCH: decision {sealed[4]}:" in capsys.readouterr().err

    def test_seal_records_seals_now(self, model_version, ingest, capsys):
        decision_ids(ingest, 2)

        call_command("seal_records")

        assert "seal 0: 2 decisions" in capsys.readouterr().out
        assert Seal.objects.get().tree_size == (
            2 + AuditEvent.objects.count() + LogRecord.objects.count()
        )


@pytest.mark.postgres
class TestTriggers:
    """On PostgreSQL the database itself refuses changes to append-only rows."""

    @pytest.fixture(autouse=True)
    def postgres_only(self):
        if connection.vendor != "postgresql":
            pytest.skip("triggers exist on PostgreSQL; SQLite relies on the model layer")

    APPEND_ONLY = [
        "decisions_decision",
        "decisions_outcome",
        "decisions_seal",
        "accounts_auditevent",
        "reviews_feedback",
        "reviews_caseevent",
        "reviews_override",
        "registry_stagechange",
        "accounts_logrecord",
        "explain_explanationconfig",
        "explain_explanationresult",
        "decisions_retirement",
        "decisions_retiredrange",
        "decisions_erasure",
        "decisions_erasedrange",
        "explain_counterfactualconfig",
        "explain_counterfactualresult",
        "serving_trafficpolicy",
        "approvals_approval",
        "approvals_approvalstep",
    ]

    def test_every_append_only_table_has_its_triggers(self, db):
        """On the tables, and on each partition of a partitioned one (auditapp/partitions.py)."""
        found = {}
        with connection.cursor() as cursor:
            for kind in ("append_only", "no_truncate"):
                cursor.execute(
                    "SELECT t.tgrelid::regclass::text, c.relispartition FROM pg_trigger t "
                    "JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname LIKE %s",
                    [f"%_{kind}"],
                )
                found[kind] = cursor.fetchall()
            cursor.execute(
                "SELECT inhparent::regclass::text, inhrelid::regclass::text FROM pg_inherits "
                "WHERE inhparent IN (SELECT partrelid FROM pg_partitioned_table)"
            )
            partitioned = cursor.fetchall()

        for rows in found.values():
            assert {table for table, partition in rows if not partition} == set(self.APPEND_ONLY)
            assert {table for table, partition in rows if partition} == {p for _, p in partitioned}
        for table in ("decisions_decision", "accounts_auditevent", "explain_explanationresult"):
            names = {p for parent, p in partitioned if parent == table}
            assert f"{table}_legacy" in names and len(names) == 1 + 1 + partitions.AHEAD

    @pytest.mark.parametrize(
        "table",
        [
            "decisions_decision",
            "decisions_seal",
            "accounts_auditevent",
            "accounts_logrecord",
            "registry_stagechange",
        ],
    )
    @pytest.mark.parametrize(
        "statement", ["UPDATE {t} SET id = id", "DELETE FROM {t}", "TRUNCATE {t} CASCADE"]
    )
    def test_updates_deletes_and_truncates_are_refused(self, sealed, table, statement):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending checks before TRUNCATE
            cursor.execute(statement.format(t=table))


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.django_db(transaction=True)
def test_committed_rows_are_hashed_in_processes_and_read_ahead(model_version, ingest, monkeypatch):
    """Outside a transaction, PostgreSQL decisions are hashed by worker processes (a few ids a
    task here) and audit events read ahead on a second connection; both still name tampering."""
    monkeypatch.setattr(rehashing, "RANGE", 4)  # several tasks per process
    monkeypatch.setattr(rehashing, "CHUNK", 3)  # several read-ahead chunks
    ids = decision_ids(ingest, 10)
    seal_new_records()
    assert not connection.in_atomic_block and rehashing._can_use_processes()

    result = verify_chain(processes=True)
    assert result.ok, result.first_bad
    assert (result.decisions, result.unsealed_decisions) == (10, 0)
    assert result.events == AuditEvent.objects.count() > 3

    event = AuditEvent.objects.order_by("id").first()
    with tampering() as cursor:
        cursor.execute("UPDATE accounts_auditevent SET action = 'x' WHERE id = %s", [event.pk])
    bad = verify_chain(processes=True).first_bad
    assert (bad["kind"], bad["id"]) == ("event", event.pk)
    with tampering() as cursor:  # put it back, then tamper with decisions
        cursor.execute(
            "UPDATE accounts_auditevent SET action = %s WHERE id = %s", [event.action, event.pk]
        )
    assert verify_chain(processes=True).ok

    with tampering() as cursor:
        cursor.execute("UPDATE decisions_decision SET score = 0.505 WHERE id = %s", [ids[7]])
        cursor.execute("DELETE FROM decisions_decision WHERE id = %s", [ids[9]])
    result = verify_chain(processes=True)
    assert (result.first_bad["kind"], result.first_bad["id"]) == ("decision", ids[7])
    assert result.decisions == 9
