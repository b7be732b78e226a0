"""Rotating the seal signing key mid-log: old seals keep verifying with their retired key.

The log is sealed with key A, the settings switch to key B with A's public key
retired (as a deployment would), and more is sealed. Signatures are checked here
with `cryptography` directly, and proofs with the RFC 9162 verifier of
test_proofs.py; tampering goes through raw SQL (test_sealing.tampering).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.core.management import call_command
from django.core.management.base import CommandError

from auditapp.accounts.audit import record_event
from auditapp.decisions.models import Seal
from auditapp.decisions.sealing import exported_seal, seal_new_records
from auditapp.decisions.verification import verify_chain
from tests.decisions.test_proofs import consistency_ok, hexes, inclusion_ok, signature_ok
from tests.decisions.test_sealing import tampering
from tests.factories import DecisionPayloadFactory
from tests.workers import ROOT

pytestmark = pytest.mark.django_db

SEED_A = base64.b64encode(b"A" * 32).decode()
SEED_B = base64.b64encode(b"B" * 32).decode()


def public_of(seed: str) -> str:
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed))
    return base64.b64encode(
        private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ).decode()


def key_id_of(seed: str) -> str:
    return hashlib.sha256(base64.b64decode(public_of(seed))).hexdigest()[:16]


A, B = key_id_of(SEED_A), key_id_of(SEED_B)


@pytest.fixture
def client(api_client, compliance_officer):
    return api_client(compliance_officer)


@pytest.fixture
def rotated(settings, model_version, ingest):
    """Two seals signed by key A, then two by key B with A retired; the decision ids per seal."""
    settings.ATTEST_SEAL_SIGNING_KEY = SEED_A
    settings.ATTEST_SEAL_RETIRED_KEYS = ()
    decisions = []
    for _ in range(2):
        decisions.append([r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(2))])
        seal_new_records()
    settings.ATTEST_SEAL_SIGNING_KEY = SEED_B
    settings.ATTEST_SEAL_RETIRED_KEYS = (public_of(SEED_A),)
    for _ in range(2):
        decisions.append([r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(2))])
        seal_new_records()
    return decisions


def seals() -> list[Seal]:
    return list(Seal.objects.order_by("index"))


def test_the_new_key_signs_new_seals_and_the_whole_log_verifies_across_the_boundary(
    rotated, capsys
):
    assert [s.key_id for s in seals()] == [A, A, B, B]
    result = verify_chain()
    assert result.ok, result.first_bad
    assert result.seals == 4

    call_command("verify_chain", "--no-progress")
    assert "OK: every record and seal matches." in capsys.readouterr().out


def test_a_kept_seal_of_the_retired_key_is_still_checked(rotated):
    kept = json.loads(json.dumps(exported_seal(seals()[1])))
    assert kept["key_id"] == A

    assert verify_chain(against=kept).ok
    forged = dict(kept, sealed_at="2001-01-01T00:00:00.000000+00:00")
    bad = verify_chain(against=forged).first_bad
    assert (
        bad["reason"] == f"the kept seal's signature does not match its tree head (retired key {A})"
    )


def test_tampering_with_a_seal_signed_by_the_retired_key_is_named(rotated):
    first = seals()[0]
    with tampering() as cursor:
        cursor.execute(
            'UPDATE decisions_seal SET signature = %s WHERE "index" = 0', [seals()[1].signature]
        )

    bad = verify_chain().first_bad

    assert bad == {
        "kind": "seal",
        "index": first.index,
        "reason": f"its signature does not match its tree head (retired key {A})",
    }


def test_a_seal_signed_by_the_new_key_but_labelled_with_the_retired_one_is_named(rotated):
    with tampering() as cursor:
        cursor.execute('UPDATE decisions_seal SET key_id = %s WHERE "index" = 2', [A])

    bad = verify_chain().first_bad

    assert (bad["index"], bad["reason"]) == (
        2,
        f"its signature does not match its tree head (retired key {A})",
    )


def test_the_retired_key_cannot_sign_after_its_successor_took_over(rotated, settings, ingest):
    """Whoever kept the old seed (or a rollback to it) cannot add seals that pass."""
    settings.ATTEST_SEAL_SIGNING_KEY = SEED_A  # the old key, with B listed as known too
    settings.ATTEST_SEAL_RETIRED_KEYS = (public_of(SEED_B),)
    ingest(DecisionPayloadFactory())
    (late,) = seal_new_records()
    assert late.key_id == A

    settings.ATTEST_SEAL_SIGNING_KEY = SEED_B  # verified where B is current and A retired
    settings.ATTEST_SEAL_RETIRED_KEYS = (public_of(SEED_A),)
    bad = verify_chain().first_bad
    assert (bad["kind"], bad["index"]) == ("seal", late.index)
    assert bad["reason"] == f"it is signed by retired key {A} after key {B} took over"


def test_a_seal_of_a_key_no_longer_listed_is_named(rotated, settings):
    settings.ATTEST_SEAL_RETIRED_KEYS = ()  # A forgotten at the next deployment

    bad = verify_chain().first_bad

    assert bad == {
        "kind": "seal",
        "index": 0,
        "reason": f"it is signed by another key ({A}) than this log's: neither the current key "
        f"({B}) nor a retired one (ATTEST_SEAL_RETIRED_KEYS)",
    }


def test_an_unknown_key_id_is_named(rotated):
    with tampering() as cursor:
        cursor.execute("UPDATE decisions_seal SET key_id = 'ffffffffffffffff' WHERE \"index\" = 3")

    bad = verify_chain().first_bad

    assert (bad["kind"], bad["index"]) == ("seal", 3)
    assert bad["reason"].startswith(
        "it is signed by another key (ffffffffffffffff) than this log's"
    )


def test_the_public_key_endpoint_lists_every_key_and_the_seals_it_signed(rotated, client):
    sizes = [s.tree_size for s in seals()]

    document = client.get("/api/v1/audit/public-key").json()

    assert {k: document[k] for k in ("key_id", "algorithm", "public_key")} == {
        "key_id": B,
        "algorithm": "Ed25519",
        "public_key": public_of(SEED_B),
    }
    assert document["keys"] == [
        {
            "key_id": A,
            "algorithm": "Ed25519",
            "public_key": public_of(SEED_A),
            "current": False,
            "first_tree_size": sizes[0],
            "last_tree_size": sizes[1],
            "seals": 2,
        },
        {
            "key_id": B,
            "algorithm": "Ed25519",
            "public_key": public_of(SEED_B),
            "current": True,
            "first_tree_size": sizes[2],
            "last_tree_size": sizes[3],
            "seals": 2,
        },
    ]
    exported = [client.get(f"/api/v1/audit/seals/{size}").json() for size in sizes]
    by_id = {key["key_id"]: key for key in document["keys"]}
    assert all(signature_ok(seal, by_id[seal["key_id"]]) for seal in exported)

    # The ranges are extended by later seals (they are cached up to the newest seal).
    record_event("test.after")
    (later,) = seal_new_records()
    again = client.get("/api/v1/audit/public-key").json()["keys"]
    assert (again[0]["last_tree_size"], again[0]["seals"]) == (sizes[1], 2)
    assert (again[1]["last_tree_size"], again[1]["seals"]) == (later.tree_size, 3)


def test_a_key_that_signed_nothing_yet_has_no_range(settings, model_version, client):
    settings.ATTEST_SEAL_SIGNING_KEY = SEED_B
    settings.ATTEST_SEAL_RETIRED_KEYS = (public_of(SEED_A),)

    keys = client.get("/api/v1/audit/public-key").json()["keys"]

    assert [(k["key_id"], k["current"], k["first_tree_size"], k["seals"]) for k in keys] == [
        (A, False, None, 0),
        (B, True, None, 0),
    ]


# --- verify_proof with the keys an auditor kept -----------------------------------------


@pytest.fixture
def files(rotated, client, tmp_path):
    """Proofs against a seal of each key, a consistency proof across keys, and the keys."""
    sizes = [s.tree_size for s in seals()]
    decision = rotated[0][0]
    documents = {
        "old_seal": client.get(f"/api/v1/audit/seals/{sizes[1]}").json(),
        "new_seal": client.get(f"/api/v1/audit/seals/{sizes[3]}").json(),
        "old_proof": client.get(
            f"/api/v1/decisions/{decision}/proof", {"tree_size": sizes[1]}
        ).json(),
        "new_proof": client.get(f"/api/v1/decisions/{decision}/proof").json(),
        "consistency": client.get("/api/v1/audit/consistency", {"first": sizes[1]}).json(),
        "keys": client.get("/api/v1/audit/public-key").json(),
    }
    for name, document in documents.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
    return tmp_path, documents


def verify_proof(*args: str) -> subprocess.CompletedProcess:
    """As an auditor runs it: another process, with no database and no key of its own."""
    var = Path(args[0]).parent / "var"
    return subprocess.run(
        [sys.executable, "manage.py", "verify_proof", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "ATTEST_VAR_DIR": str(var)},
    )


def test_verify_proof_checks_a_seal_of_the_retired_key_with_that_key(files):
    folder, documents = files
    old_seal, old_proof = str(folder / "old_seal.json"), str(folder / "old_proof.json")
    proof = documents["old_proof"]
    assert documents["old_seal"]["key_id"] == A
    assert inclusion_ok(
        bytes.fromhex(proof["content_hash"]),
        proof["leaf_index"],
        proof["tree_size"],
        hexes(proof["audit_path"]),
        bytes.fromhex(documents["old_seal"]["root_hash"]),
    )

    with_old_key = verify_proof(old_seal, old_proof, "--public-key", public_of(SEED_A))
    with_new_key = verify_proof(old_seal, old_proof, "--public-key", public_of(SEED_B))
    with_both = verify_proof(
        old_seal,
        old_proof,
        "--public-key",
        public_of(SEED_B),
        "--public-key",
        public_of(SEED_A),
    )

    assert with_old_key.returncode == 0, with_old_key.stderr
    assert with_old_key.stdout.strip().endswith(f"signed by key {A}.")
    assert with_new_key.returncode == 1
    assert with_new_key.stderr.strip().splitlines()[-1] == (
        f"INVALID: the seal is signed by key {A}, the public key given is {B}."
    )
    assert with_both.returncode == 0, with_both.stderr


def test_verify_proof_takes_every_key_the_endpoint_listed_and_spans_the_rotation(files):
    folder, documents = files
    keys = str(folder / "keys.json")
    assert (documents["old_seal"]["key_id"], documents["new_seal"]["key_id"]) == (A, B)
    assert consistency_ok(
        documents["consistency"]["first"],
        documents["consistency"]["second"],
        bytes.fromhex(documents["old_seal"]["root_hash"]),
        bytes.fromhex(documents["new_seal"]["root_hash"]),
        hexes(documents["consistency"]["consistency_proof"]),
    )

    old = verify_proof(
        str(folder / "old_seal.json"), str(folder / "old_proof.json"), "--public-key", keys
    )
    new = verify_proof(
        str(folder / "new_seal.json"), str(folder / "new_proof.json"), "--public-key", keys
    )
    across = verify_proof(
        str(folder / "old_seal.json"),
        str(folder / "consistency.json"),
        "--later-seal",
        str(folder / "new_seal.json"),
        "--public-key",
        keys,
    )
    only_new = verify_proof(
        str(folder / "old_seal.json"),
        str(folder / "consistency.json"),
        "--later-seal",
        str(folder / "new_seal.json"),
        "--public-key",
        public_of(SEED_B),
    )

    assert old.returncode == new.returncode == across.returncode == 0, (
        old.stderr + new.stderr + across.stderr
    )
    assert across.stdout.startswith(f"VALID: the tree of {documents['new_seal']['tree_size']}")
    assert across.stdout.strip().endswith(f"signed by key {A} (the later seal by key {B}).")
    assert only_new.returncode == 1
    assert f"the seal is signed by key {A}, the public key given is {B}" in only_new.stderr


def test_verify_proof_catches_a_tampered_seal_of_the_retired_key(files, capsys):
    folder, documents = files
    forged = dict(documents["old_seal"], tree_size=documents["old_seal"]["tree_size"] + 1)
    (folder / "forged.json").write_text(json.dumps(forged))

    with pytest.raises(SystemExit) as exit_info:
        call_command(
            "verify_proof",
            str(folder / "forged.json"),
            str(folder / "old_proof.json"),
            "--public-key",
            str(folder / "keys.json"),
        )

    assert exit_info.value.code == 1
    assert "the seal's signature does not match its tree head" in capsys.readouterr().err


# --- new_seal_key and the settings ------------------------------------------------------


def test_new_seal_key_prints_the_settings_to_deploy(settings, capsys, tmp_path):
    settings.ATTEST_SEAL_SIGNING_KEY = SEED_B
    settings.ATTEST_SEAL_RETIRED_KEYS = (public_of(SEED_A),)

    call_command("new_seal_key")
    out = capsys.readouterr().out
    call_command("new_seal_key", "--seed-file", str(tmp_path / "next.key"))
    written = capsys.readouterr().out

    (seed,) = [
        line.split("=", 1)[1] for line in out.split() if line.startswith("ATTEST_SEAL_SIGNING_KEY=")
    ]
    assert out.startswith(f"New seal signing key {key_id_of(seed)}, public key {public_of(seed)}\n")
    assert f"ATTEST_SEAL_RETIRED_KEYS={public_of(SEED_A)},{public_of(SEED_B)}\n" in out
    assert f"the current key {B} retires" in out
    file_seed = (tmp_path / "next.key").read_text().strip()
    assert (tmp_path / "next.key").stat().st_mode & 0o777 == 0o600
    assert file_seed not in written and file_seed != seed
    assert f"ATTEST_SEAL_SIGNING_KEY=$(cat {tmp_path / 'next.key'})" in written
    with pytest.raises(CommandError, match="exists already"):
        call_command("new_seal_key", "--seed-file", str(tmp_path / "next.key"))


def manage_check(tmp_path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "ATTEST_VAR_DIR": str(tmp_path), **env},
    )


@pytest.mark.parametrize(
    ("retired", "message"),
    [
        ("not-a-key", "entry 1 of 1 ('not-a-key'): the public key is not base64"),
        (
            f"{public_of(SEED_A)}, {base64.b64encode(bytes(31)).decode()}",
            "entry 2 of 2 ('AAAAAAAAAAAAAAAA...'): the public key must be 32 bytes, got 31",
        ),
        (
            f"{public_of(SEED_A)},{public_of(SEED_A)}",
            f"entry 2 of 2 ('{public_of(SEED_A)[:16]}...') repeats key {A}",
        ),
        (public_of(SEED_B), "lists the public key of ATTEST_SEAL_SIGNING_KEY, the current key"),
    ],
)
def test_start_up_refuses_bad_retired_keys_naming_the_entry(tmp_path, retired, message):
    result = manage_check(
        tmp_path, ATTEST_SEAL_SIGNING_KEY=SEED_B, ATTEST_SEAL_RETIRED_KEYS=retired
    )

    assert result.returncode == 1
    assert "ImproperlyConfigured: ATTEST_SEAL_RETIRED_KEYS" in result.stderr
    assert message in result.stderr


def test_start_up_accepts_retired_keys_with_spaces_and_a_trailing_comma(tmp_path):
    retired = f" {public_of(SEED_A)} ,\n{base64.b64encode(bytes(32)).decode()},"

    result = manage_check(
        tmp_path, ATTEST_SEAL_SIGNING_KEY=SEED_B, ATTEST_SEAL_RETIRED_KEYS=retired
    )

    assert result.returncode == 0, result.stderr
