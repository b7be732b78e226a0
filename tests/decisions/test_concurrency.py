"""Two clients sending the same decision at the same moment store it once; the sealing lock."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent
from auditapp.appendonly import SEALING_LOCK
from auditapp.decisions.models import Decision
from auditapp.decisions.outcomes import record_outcomes
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.services import record_decisions
from auditapp.decisions.verification import verify_chain
from auditapp.hashing import canonical_time
from explain.models import Explanation
from tests.factories import DecisionPayloadFactory


def send_together(payload: dict, user_id: int, senders: int = 2) -> list:
    """Call record_decisions from `senders` threads released at the same instant."""
    barrier = threading.Barrier(senders)
    outcomes: list = [None] * senders

    def send(slot: int) -> None:
        try:
            actor = roles.Actor(user=get_user_model().objects.get(pk=user_id))
            barrier.wait(timeout=30)
            outcomes[slot] = record_decisions(actor, payload, source="api")
        except Exception as exc:  # handed to the main thread, which fails the test
            outcomes[slot] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(slot,)) for slot in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_identical_requests_store_one_decision(model_version, ml_engineer):
    item = DecisionPayloadFactory()

    outcomes = send_together({"decisions": [item]}, ml_engineer.pk)

    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert not errors, errors
    results = [result for (result,) in outcomes]
    assert sorted(r["status"] for r in results) == ["created", "duplicate"]
    assert {r["request_id"] for r in results} == {item["request_id"]}
    (decision,) = Decision.objects.all()
    assert {r["id"] for r in results} == {decision.pk}
    assert sorted(Explanation.objects.values_list("decision_id", "method")) == [
        (decision.pk, "lime"),
        (decision.pk, "shap"),
    ]
    events = AuditEvent.objects.filter(action="decisions.ingested")
    assert sorted(e.details["created"] for e in events) == [0, 1]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_identical_batches_store_each_decision_once(model_version, ml_engineer):
    # Batches take the bulk path (COPY on PostgreSQL), single decisions do not.
    items = DecisionPayloadFactory.build_batch(3)

    outcomes = send_together({"decisions": items}, ml_engineer.pk)

    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert not errors, errors
    first, second = outcomes
    assert sorted([[r["status"] for r in first], [r["status"] for r in second]]) == [
        ["created"] * 3,
        ["duplicate"] * 3,
    ]
    assert [r["id"] for r in first] == [r["id"] for r in second]
    stored = dict(Decision.objects.values_list("request_id", "id"))
    assert [stored[i["request_id"]] for i in items] == [r["id"] for r in first]
    assert Explanation.objects.count() == 6


def write_between(table: str, write) -> object:
    """An execute wrapper: right after the first read of `table`, `write` commits on another
    connection, as a worker or a client would while a verification is under way."""
    done: list = []

    def wrapper(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if (
            not done
            and f'FROM "{table}"' in sql
            and sql.lstrip().upper().startswith(("SELECT", "DECLARE"))
        ):
            done.append(True)
            failure: list = []

            def other_client() -> None:
                try:
                    write()
                except Exception as exc:  # handed to the main thread
                    failure.append(exc)
                finally:
                    connection.close()

            thread = threading.Thread(target=other_client)
            thread.start()
            thread.join(timeout=60)
            assert not failure, failure
        return result

    wrapper.done = done
    return wrapper


# The finding (CI's quick start smoke run): `verify_chain` run while the demo's worker
# stored explanations said "explanation 2676: it is not in the log": it read the log's
# records, then the rows, and a row committed between the two reads had no record yet.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "first_read",
    ["accounts_logrecord", "accounts_auditevent"],
    ids=["records-then-rows", "ingestion-events-then-decisions"],
)
def test_verification_reads_one_moment_while_writers_commit(
    model_version, ingest, ml_engineer, first_read
):
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(3))]
    seal_new_records()

    def write() -> None:
        # A decision (with its ingestion event) and an outcome (with its record).
        ingest(DecisionPayloadFactory())
        actor = roles.Actor(user=get_user_model().objects.get(pk=ml_engineer.pk))
        outcome = {"decision_id": ids[0], "outcome": "bad"}
        outcome["observed_at"] = canonical_time(timezone.now())
        record_outcomes(actor, {"outcomes": [outcome]})

    wrapper = write_between(first_read, write)
    with connection.execute_wrapper(wrapper):
        result = verify_chain()

    assert wrapper.done, f"verification never read {first_read}"
    assert result.ok, result.problems()
    assert verify_chain().ok  # and what was written meanwhile verifies afterwards


@pytest.mark.django_db(transaction=True)
def test_an_event_written_alone_waits_for_the_sealer_before_it_draws_its_id():
    """record_event outside a transaction is one statement; the sealing lock comes first in it."""
    if connection.vendor != "postgresql":
        pytest.skip("the sealing lock is PostgreSQL's; SQLite commits in id order")
    sealer = connection.get_new_connection(connection.get_connection_params())
    sequence = "SELECT last_value FROM pg_sequences WHERE sequencename = %s"
    name = f"{AuditEvent._meta.db_table}_id_seq"
    try:
        sealer.execute("SELECT pg_advisory_xact_lock(%s)", [SEALING_LOCK])  # a sealing in progress
        drawn_before = sealer.execute(sequence, [name]).fetchone()
        written: list = []

        def write() -> None:
            try:
                written.append(record_event("test.waited"))
            finally:
                connection.close()

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive()  # waiting for the sealer ...
        assert sealer.execute(sequence, [name]).fetchone() == drawn_before  # ... with no id drawn
        sealer.commit()
        writer.join(timeout=30)
        assert not writer.is_alive()
    finally:
        sealer.close()
    (event,) = written
    assert AuditEvent.objects.get(action="test.waited").pk == event.pk


def test_an_event_inside_a_transaction_is_rolled_back_with_it(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        record_event("test.rolled_back")
        raise RuntimeError("the service failed after its event")

    assert not AuditEvent.objects.filter(action="test.rolled_back").exists()
