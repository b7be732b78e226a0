"""Encryption at rest of sensitive inputs (issue 20 item 4): nothing sensitive in clear in
the table, shown by role through the API and pages, bound to its row, a clear error without
its key, rotation with an interruption and a resume, and the blind-index search."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from contextlib import contextmanager
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client

from auditapp import encryption
from auditapp.accounts.models import AuditEvent
from auditapp.decisions import rotation
from auditapp.decisions.models import Decision
from auditapp.decisions.presenters import MASK
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.verification import verify_chain
from tests.conftest import embedded_default
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db(transaction=True)
postgresql_only = pytest.mark.skipif(embedded_default(), reason="PostgreSQL's")
TABLE = Decision._meta.db_table
DISTINCT_INCOME = 987654.321  # a value no other field of a decision holds


def new_key(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


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


@pytest.fixture
def keys(settings):
    """Two data keys; k1 current."""
    settings.ATTEST_DATA_KEYS = (first := new_key("k1"),)
    return {"k1": first, "k2": new_key("k2")}


@pytest.fixture
def distinct(model_version, ingest, keys) -> Decision:
    item = DecisionPayloadFactory()
    item["inputs"]["income"] = DISTINCT_INCOME
    (result,) = ingest(item)
    return Decision.objects.get(pk=result["id"])


def raw_row(pk: int) -> tuple:
    text = "::text" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT inputs{text}, sealed_inputs, sensitive_tokens{text} FROM {TABLE} "
            "WHERE id = %s",
            [pk],
        )
        return cursor.fetchone()


# --- storage ------------------------------------------------------------------------


def test_the_stored_row_holds_no_plaintext_of_a_sensitive_value(distinct):
    inputs, sealed, tokens = raw_row(distinct.pk)

    assert "income" not in inputs and "sex" not in inputs and "debt_ratio" in inputs
    assert str(DISTINCT_INCOME).encode() not in bytes(sealed)
    assert str(DISTINCT_INCOME) not in tokens
    assert encryption.key_id_of(bytes(sealed)) == "k1"
    assert distinct.full_inputs()["income"] == DISTINCT_INCOME
    assert distinct.compute_content_hash() == distinct.content_hash


def test_each_decision_of_a_batch_has_its_own_salt_and_nonce(model_version, ingest, keys):
    """A batch draws its randomness at once and slices it: no two rows may share a slice
    (a repeated AES-GCM nonce under one key gives the two plaintexts' XOR away)."""
    items = DecisionPayloadFactory.create_batch(40)
    ingest(*items)
    rows = list(Decision.objects.filter(request_id__in=[i["request_id"] for i in items]))
    salts = [bytes(row.salt) for row in rows]
    nonces = []
    for row in rows:
        blob = bytes(row.sealed_inputs)
        start = 2 + blob[1]  # after the format byte and the key id
        nonces.append(blob[start : start + encryption.NONCE_BYTES])
    assert len(rows) == len(set(salts)) == len(set(nonces)) == 40
    assert {len(s) for s in salts} == {16}
    submitted = {i["request_id"]: i["inputs"] for i in items}
    for row in rows:
        assert row.full_inputs() == submitted[row.request_id]
        assert row.compute_content_hash() == row.content_hash


@postgresql_only
def test_a_dump_of_the_table_does_not_hold_the_value(distinct):
    params = connection.get_connection_params()
    dump = subprocess.run(
        [
            "pg_dump",
            "-h",
            params.get("host") or "127.0.0.1",
            "-p",
            str(params.get("port") or 5432),
            "-U",
            params["user"],
            "--data-only",
            "-t",
            "decisions_decision*",
            params["dbname"],
        ],
        capture_output=True,
        check=True,
        env={**os.environ, "PGPASSWORD": params.get("password") or ""},
    ).stdout.decode()

    assert distinct.request_id in dump  # the row is in the dump
    assert "987654" not in dump


# --- reading by role ------------------------------------------------------------------


def test_the_api_and_the_page_show_it_with_view_sensitive_and_mask_it_otherwise(
    distinct, api_client, compliance_officer, auditor
):
    url = f"/api/v1/decisions/{distinct.pk}"
    shown = api_client(compliance_officer).get(url).json()
    masked = api_client(auditor).get(url).json()

    assert shown["inputs"]["income"] == DISTINCT_INCOME
    assert masked["inputs"]["income"] == MASK and masked["masked_features"] == ["income", "sex"]
    assert shown["sensitive_inputs_commitment"] == masked["sensitive_inputs_commitment"]
    page = f"/decisions/{distinct.pk}/"
    assert "987,654" in browser(compliance_officer).get(page).content.decode()
    assert "987,654" not in browser(auditor).get(page).content.decode()
    assert AuditEvent.objects.filter(action="decision.viewed", object_id=str(distinct.pk)).count()


def test_the_search_rows_open_the_sealed_values_for_allowed_roles_only(
    distinct, api_client, compliance_officer, auditor
):
    params = {"model": "credit"}
    (shown,) = api_client(compliance_officer).get("/api/v1/decisions", params).json()["results"]
    (masked,) = api_client(auditor).get("/api/v1/decisions", params).json()["results"]

    assert shown["inputs"]["income"] == DISTINCT_INCOME
    assert masked["inputs"]["income"] == MASK


# --- bound to its row; keys --------------------------------------------------------------


def test_a_ciphertext_moved_to_another_row_does_not_open(model_version, ingest, keys):
    first, second = (r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(2)))
    with tampering() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET sealed_inputs = (SELECT sealed_inputs FROM {TABLE} "
            "WHERE id = %s) WHERE id = %s",
            [first, second],
        )

    with pytest.raises(encryption.UnreadableInputs, match="not sealed for this decision"):
        Decision.objects.get(pk=second).full_inputs()
    seal_new_records()
    result = verify_chain()
    assert not result.ok and result.first_bad["id"] == second


def test_without_its_key_a_decision_is_a_clear_503_not_a_traceback(
    distinct, settings, api_client, compliance_officer
):
    settings.ATTEST_DATA_KEYS = (new_key("k9"),)  # k1 is gone

    answer = api_client(compliance_officer).get(f"/api/v1/decisions/{distinct.pk}")
    page = browser(compliance_officer).get(f"/decisions/{distinct.pk}/")

    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "sensitive_inputs_unreadable"
    assert "'k1', which is not configured" in answer.json()["error"]["message"]
    assert page.status_code == 503
    assert "which is not configured" in page.content.decode()
    assert "Traceback" not in page.content.decode()


def test_a_wrong_key_under_the_same_id_is_named(distinct, settings):
    settings.ATTEST_DATA_KEYS = (new_key("k1"),)

    with pytest.raises(encryption.UnreadableInputs, match="do not open with data key 'k1'"):
        Decision.objects.get(pk=distinct.pk).full_inputs()


def test_malformed_keys_are_refused():
    with pytest.raises(ValueError, match="must be 32 bytes"):
        encryption.parse_data_keys(["k1:" + base64.b64encode(b"short").decode()])
    with pytest.raises(ValueError, match="key id"):
        encryption.parse_data_keys(["bad id:" + base64.b64encode(bytes(32)).decode()])
    with pytest.raises(ValueError, match="twice"):
        encryption.parse_data_keys([new_key("a").replace("a:", "k:"), new_key("k")])


# --- the table refuses any other change -------------------------------------------------


@postgresql_only
def test_the_trigger_lets_only_the_reencryption_change_through(distinct):
    sealed = encryption.seal({"income": 1.0, "sex": "male"}, "elsewhere")
    statements = [
        (False, f"UPDATE {TABLE} SET sealed_inputs = %s WHERE id = %s", [sealed, distinct.pk]),
        (
            True,
            f"UPDATE {TABLE} SET score = 0.01, sealed_inputs = %s WHERE id = %s",
            [sealed, distinct.pk],
        ),
        (
            True,
            f"UPDATE {TABLE} SET inputs = inputs || '{{\"x\": 1}}' WHERE id = %s",
            [distinct.pk],
        ),
    ]
    for with_setting, sql, params in statements:
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            if with_setting:
                cursor.execute("SELECT set_config('attest.reencryption', 'on', true)")
            cursor.execute(sql, params)


# --- rotation ------------------------------------------------------------------------------


def rotate(*args: str) -> str:
    out = StringIO()
    call_command("rotate_data_keys", *args, stdout=out)
    return out.getvalue()


def test_rotation_interrupted_and_resumed_leaves_every_decision_under_the_new_key(
    model_version, ingest, keys, settings
):
    items = DecisionPayloadFactory.build_batch(25)
    ids = [r["id"] for r in ingest(*items)]
    sent = {i: item["inputs"] for i, item in zip(ids, items, strict=True)}
    # Five decisions as recorded before encryption at rest: their values in clear.
    with tampering() as cursor:
        for pk in ids[:5]:
            cursor.execute(
                f"UPDATE {TABLE} SET inputs = %s, sealed_inputs = NULL, sensitive_tokens = NULL "
                "WHERE id = %s",
                [encryption.canonical_json(sent[pk]), pk],
            )
    seal_new_records()
    hashes = dict(Decision.objects.values_list("pk", "content_hash"))
    assert verify_chain().ok

    settings.ATTEST_DATA_KEYS = (keys["k2"], keys["k1"])  # k2 encrypts, both decrypt
    assert rotation.pending_count() == 25
    first = rotate("--batch", "10", "--max-batches", "1")  # interrupted after one batch
    assert "Current data key: k2" in first and "10 / 25 decisions re-encrypted" in first
    assert "Stopped with 15 left: run the command again to continue." in first
    assert rotation.pending_count() == 15

    second = rotate("--batch", "10")  # resumed: only what is left
    assert "10 / 15 decisions re-encrypted" in second and "15 / 15" in second
    assert "Done: 15 re-encrypted, none left." in second

    settings.ATTEST_DATA_KEYS = (keys["k2"],)  # k1 retired
    for decision in Decision.objects.filter(pk__in=ids):
        inputs, sealed, _ = raw_row(decision.pk)
        assert encryption.key_id_of(bytes(sealed)) == "k2"
        assert "income" not in inputs
        assert decision.full_inputs() == sent[decision.pk]
    assert dict(Decision.objects.values_list("pk", "content_hash")) == hashes
    assert verify_chain().ok
    assert rotate().endswith("Done: 0 re-encrypted, none left.\n")
    finished = AuditEvent.objects.filter(action=rotation.FINISHED_EVENT).order_by("pk")
    assert [(e.details["reencrypted"], e.details["left"]) for e in finished] == [
        (10, 15),
        (15, 0),
        (0, 0),
    ]
    assert AuditEvent.objects.filter(action=rotation.STARTED_EVENT).count() == 3


def test_rotation_without_the_old_key_stops_and_names_it(distinct, settings):
    settings.ATTEST_DATA_KEYS = (new_key("k2"),)
    with pytest.raises(Exception, match="data key 'k1', which is not configured"):
        rotate()
    assert rotation.pending_count() == 1


# --- search --------------------------------------------------------------------------------


def test_an_exact_search_on_a_sensitive_feature_uses_the_blind_index(
    distinct, ingest, api_client, compliance_officer, auditor
):
    ingest(*DecisionPayloadFactory.build_batch(5))
    officer = api_client(compliance_officer)
    search = "/api/v1/decisions"

    found = officer.get(search, {"model": "credit", "feature.income": "987654.321"}).json()
    as_float = officer.get(search, {"model": "credit", "feature.income": str(DISTINCT_INCOME)})
    sex = distinct.full_inputs()["sex"]
    by_sex = officer.get(search, {"model": "credit", "feature.sex": sex}).json()["results"]
    ranged = officer.get(search, {"model": "credit", "feature.income__gte": "1000"})
    refused = api_client(auditor).get(search, {"model": "credit", "feature.income": "987654.321"})

    assert [r["id"] for r in found["results"]] == [distinct.pk]
    assert [r["id"] for r in as_float.json()["results"]] == [distinct.pk]
    expected = {d.pk for d in Decision.objects.all() if d.full_inputs()["sex"] == sex}
    assert {r["id"] for r in by_sex} == expected
    assert ranged.status_code == 400
    assert "exact value only" in str(ranged.json()["error"]["details"])
    assert refused.status_code == 403  # as before: no oracle for roles that may not see it


def test_rotation_leaves_erased_decisions_as_the_erasure_left_them(
    model_version, ingest, keys, settings
):
    """An erased decision (inputs {}, no blob) read as one recorded before encryption at
    rest: rotation counted it as pending at every run and sealed an empty blob into it,
    where the erasure had declared none."""
    from auditapp.accounts import roles
    from auditapp.decisions import erasure
    from auditapp.decisions.models import Erasure

    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(3))]
    plan = erasure.plan_erasure(
        Decision.objects.filter(pk__in=ids[:2]), cause=Erasure.SUBJECT_REQUEST, reason="test"
    )
    erasure.erase(roles.system_actor(), plan, via="command")
    seal_new_records()

    settings.ATTEST_DATA_KEYS = (keys["k2"], keys["k1"])
    assert rotation.pending_count() == 1
    assert "Done: 1 re-encrypted, none left." in rotate()
    for pk in ids[:2]:
        inputs, sealed, _ = raw_row(pk)
        assert sealed is None and inputs in ("{}", {})
    assert encryption.key_id_of(bytes(raw_row(ids[2])[1])) == "k2"
    assert verify_chain().ok
