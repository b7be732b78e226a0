"""The log's proofs through the API, checked by a verifier written here from RFC 9162.

Nothing below imports the project's Merkle code to check a proof: the verifier,
the leaf formats and the signed statement are rebuilt from the README and the
RFCs, and signatures are checked with `cryptography` directly. Subtrees of 2^8
leaves are stored; the log built here is large enough to need them, and a
second run stores every 2^2 so that several stored heights are crossed, and reads
only slices of the seals' leaves, as it does from large seals.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import CommandError, call_command
from django.db import connection
from playwright.sync_api import expect

from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent, LogRecord
from auditapp.celery import app as celery_app
from auditapp.decisions import jobs, log
from auditapp.decisions.models import Decision, Seal, VerificationJob
from auditapp.decisions.proofs import inclusion_holds, inclusion_proof
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.verification import read_exported_seal, verify_chain
from auditapp.errors import InvalidInput
from explain import publishing
from tests.decisions.test_partitions import recorded_before_form_2
from tests.decisions.test_sealing import tampering
from tests.factories import DecisionPayloadFactory
from tests.web.test_browser import SHOTS, chromium, log_in  # noqa: F401 (a fixture)
from tests.workers import ROOT, Worker, wait_until

pytestmark = pytest.mark.django_db


# --- an independent verifier (RFC 9162 2.1.3.2 and 2.1.4.2) ----------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def inclusion_ok(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    if index >= size:
        return False
    fn, sn, r = index, size - 1, sha256(b"\x00" + leaf)
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node(p, r)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def consistency_ok(m: int, n: int, root_m: bytes, root_n: bytes, path: list[bytes]) -> bool:
    if m == n:
        return not path and root_m == root_n
    if not 0 < m < n or not path:
        return False
    if m & (m - 1) == 0:
        path = [root_m, *path]
    fn, sn = m - 1, n - 1
    while fn % 2 == 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == root_m and sr == root_n


def signature_ok(seal: dict, public_key: dict) -> bool:
    """Ed25519 over RFC 8785 JSON of the tree head (plain values: sorted keys, no spaces)."""
    head = {k: seal[k] for k in ("tree_size", "root_hash", "sealed_at")}
    message = json.dumps(head, sort_keys=True, separators=(",", ":")).encode()
    raw = base64.b64decode(public_key["public_key"])
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(seal["signature"]), message)
    except Exception:
        return False
    return seal["key_id"] == hashlib.sha256(raw).hexdigest()[:16]


def hexes(nodes: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in nodes]


# --- a log of a few hundred leaves in seals of uneven sizes ------------------------------


@pytest.fixture
def client(api_client, compliance_officer):
    return api_client(compliance_officer)


def grow_log(ingest, batches=(3, 290, 1, 40, 200)) -> list[int]:
    """Decisions and many audit events, sealed in batches of the given numbers of events."""
    decision_ids = []
    for count in batches:
        decision_ids += [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(2))]
        for n in range(count):
            record_event("test.filler", n=n)
        seal_new_records()
    return decision_ids


def all_seals(client) -> list[dict]:
    seals, cursor = [], None
    while True:
        page = client.get(
            "/api/v1/audit/seals", {"limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        assert page.status_code == 200, page.json()
        seals += page.json()["results"]
        cursor = page.json()["next"]
        if cursor is None:
            return seals[::-1]


@pytest.mark.parametrize(("stride", "read_whole"), [(8, 4096), (2, 0)])
def test_every_proof_from_the_api_checks_out_with_an_independent_verifier(
    model_version, ingest, client, monkeypatch, stride, read_whole
):
    """Also with every 2^2, 2^4... subtree stored, and only slices of seals read."""
    monkeypatch.setattr(log, "STRIDE", stride)
    monkeypatch.setattr(log, "READ_WHOLE", read_whole)
    decision_ids = grow_log(ingest)
    public_key = client.get("/api/v1/audit/public-key").json()
    seals = all_seals(client)

    assert public_key["algorithm"] == "Ed25519"
    assert [s["tree_size"] for s in seals] == sorted(
        Seal.objects.values_list("tree_size", flat=True)
    )
    assert seals[-1]["tree_size"] > 1 << 9  # past stored subtrees of 2^8 leaves
    assert all(signature_ok(seal, public_key) for seal in seals)
    assert client.get("/api/v1/audit/seals/latest").json() == seals[-1]

    for i, old in enumerate(seals):
        for new in seals[i:]:
            answer = client.get(
                "/api/v1/audit/consistency", {"first": old["tree_size"], "second": new["tree_size"]}
            ).json()
            assert (answer["first_root"], answer["second_root"]) == (
                old["root_hash"],
                new["root_hash"],
            )
            assert consistency_ok(
                old["tree_size"],
                new["tree_size"],
                bytes.fromhex(old["root_hash"]),
                bytes.fromhex(new["root_hash"]),
                hexes(answer["consistency_proof"]),
            ), (old["tree_size"], new["tree_size"])

    for decision_id in decision_ids:
        content = bytes.fromhex(Decision.objects.get(pk=decision_id).content_hash)
        for seal in seals:
            response = client.get(
                f"/api/v1/decisions/{decision_id}/proof", {"tree_size": seal["tree_size"]}
            )
            if response.status_code == 400:  # sealed after this seal
                assert Seal.objects.get(tree_size=seal["tree_size"]).last_decision_id < decision_id
                continue
            assert response.status_code == 200, response.json()
            proof = response.json()
            assert set(proof) == {
                "decision_id",
                "content_hash",
                "leaf_index",
                "tree_size",
                "root_hash",
                "audit_path",
            }
            assert proof["root_hash"] == seal["root_hash"]
            assert inclusion_ok(
                content,
                proof["leaf_index"],
                seal["tree_size"],
                hexes(proof["audit_path"]),
                bytes.fromhex(seal["root_hash"]),
            )
            assert not inclusion_ok(
                b"event:" + content,
                proof["leaf_index"],
                seal["tree_size"],
                hexes(proof["audit_path"]),
                bytes.fromhex(seal["root_hash"]),
            )


def test_the_roots_are_the_rfc_6962_tree_of_the_documented_leaves(model_version, ingest):
    """Each seal appends its decisions by id, its audit events (b"event:" + hash), then its
    other records (b"record:" + hash)."""
    grow_log(ingest, batches=(5, 300))
    leaves, after = [], {"decision": 0, "event": 0, "record": 0}
    for seal in Seal.objects.order_by("index"):
        for kind, model, prefix in (
            ("decision", Decision, b""),
            ("event", AuditEvent, b"event:"),
            ("record", LogRecord, b"record:"),
        ):
            last = getattr(seal, f"last_{kind}_id") or after[kind]
            rows = model.objects.filter(pk__gt=after[kind], pk__lte=last).order_by("id")
            leaves += [prefix + bytes.fromhex(r.content_hash) for r in rows]
            after[kind] = last
        assert len(leaves) == seal.tree_size
        assert seal.root_hash == mth(leaves).hex()
    assert any(leaf.startswith(b"record:") for leaf in leaves)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1, recursively."""
    if len(leaves) == 1:
        return sha256(b"\x00" + leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node(mth(leaves[:k]), mth(leaves[k:]))


# --- errors ---------------------------------------------------------------------


def test_bad_sizes_are_named(model_version, ingest, client):
    first, _, later, _ = grow_log(ingest, batches=(1, 1))
    small, large = Seal.objects.order_by("index").values_list("tree_size", flat=True)
    (unsealed,) = [r["id"] for r in ingest(DecisionPayloadFactory())]

    def error(url, **params):
        response = client.get(url, params)
        return response.status_code, response.json()["error"]["code"]

    assert error("/api/v1/audit/consistency", first=large, second=small) == (400, "invalid")
    assert error("/api/v1/audit/consistency", first="x") == (400, "invalid")
    assert error("/api/v1/audit/consistency", first=0) == (400, "invalid")
    assert error("/api/v1/audit/consistency", first=small + 1) == (404, "no_such_seal")
    assert error("/api/v1/audit/seals/99999") == (404, "no_such_seal")
    assert error("/api/v1/audit/seals", cursor="bogus") == (400, "invalid")
    proof = f"/api/v1/decisions/{first}/proof"
    assert error(proof, tree_size=small + 1) == (404, "no_such_seal")
    assert error(proof, tree_size="-3") == (400, "invalid")
    assert error(f"/api/v1/decisions/{unsealed}/proof") == (404, "not_sealed")
    assert error(f"/api/v1/decisions/{later}/proof", tree_size=small) == (400, "invalid")
    consistent = client.get("/api/v1/audit/consistency", {"first": small}).json()
    assert consistent["second"] == large  # the latest seal by default


def test_get_verifies_now_only_a_small_log_and_points_to_the_job(
    model_version, ingest, client, settings
):
    grow_log(ingest, batches=(1,))
    assert client.get("/api/v1/audit/verify").json()["ok"] is True

    settings.ATTEST_VERIFY_NOW_LIMIT = 3
    response = client.get("/api/v1/audit/verify")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "verify_as_job"
    assert response.json()["error"]["details"]["post"] == "/api/v1/audit/verify"


def test_a_job_writes_its_progress_then_the_result(
    model_version, ingest, client, monkeypatch, django_capture_on_commit_callbacks
):
    grow_log(ingest, batches=(40,))
    monkeypatch.setattr("auditapp.decisions.rehashing.CHUNK", 5)
    monkeypatch.setattr(jobs, "PROGRESS_EVERY", 0)
    seen = []
    real = jobs.write_progress

    def spy(job_id, percent):
        real(job_id, percent)
        seen.append(VerificationJob.objects.get(pk=job_id).progress)

    monkeypatch.setattr(jobs, "write_progress", spy)
    with django_capture_on_commit_callbacks() as sent:  # not sent: no worker here
        answer = client.post("/api/v1/audit/verify", {}, format="json")
    assert answer.status_code == 202 and len(sent) == 1
    job_id = answer.json()["id"]
    assert answer.json()["status_url"] == f"/api/v1/audit/verify/{job_id}"
    assert client.get(f"/api/v1/audit/verify/{job_id}").json()["status"] == "pending"

    assert jobs.run_verification(job_id) == "done"

    assert len(seen) > 5 and seen == sorted(seen) and seen[0] > 0 and seen[-1] < 100
    status = client.get(f"/api/v1/audit/verify/{job_id}").json()
    assert (status["status"], status["progress"]) == ("done", 100)
    assert status["result"]["ok"] is True and status["result"]["seals"] == 1
    event = AuditEvent.objects.filter(action="chain.verified").get()
    assert event.details["job"] == job_id and event.actor_name == "compliance_officer"


def test_a_kept_seal_sent_to_the_job_is_checked_and_a_malformed_one_refused(
    model_version, ingest, client
):
    grow_log(ingest, batches=(1,))
    kept = client.get("/api/v1/audit/seals/latest").json()

    job_id = client.post("/api/v1/audit/verify", kept, format="json").json()["id"]
    assert jobs.run_verification(job_id) == "done"
    result = VerificationJob.objects.get(pk=job_id).result
    assert result["ok"] and result["checked_against"]["tree_size"] == kept["tree_size"]

    refused = client.post("/api/v1/audit/verify", {"tree_size": "many"}, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_seal"


def test_a_kept_seal_that_gives_a_key_twice_is_refused_on_every_way_in(
    model_version, ingest, client, tmp_path
):
    """{"root_hash": <forged>, ..., "root_hash": <true>}: one reader checks one root,
    another the other; a kept seal must say one thing (page upload, manage.py, API)."""
    grow_log(ingest, batches=(1,))
    kept = client.get("/api/v1/audit/seals/latest").json()
    text = json.dumps(kept).replace('"root_hash": ', f'"root_hash": "{"0" * 64}", "root_hash": ', 1)
    path = tmp_path / "kept.json"
    path.write_text(text)

    with pytest.raises(InvalidInput, match="'root_hash' is given twice"):
        read_exported_seal(text.encode())
    with pytest.raises(CommandError, match="'root_hash' is given twice"):
        call_command("verify_chain", "--against", str(path), "--no-progress")
    refused = client.generic("POST", "/api/v1/audit/verify", text, content_type="application/json")
    assert refused.status_code == 400 and "root_hash" in refused.json()["error"]["message"]


# --- verify_proof: the auditor's offline check -------------------------------------------


@pytest.fixture
def exported(model_version, ingest, client, tmp_path):
    """A decision's proof, its seal, an earlier seal, a consistency proof and the key, as files."""
    first = grow_log(ingest, batches=(2, 3))[0]
    old, new = Seal.objects.order_by("index").values_list("tree_size", flat=True)
    files = {
        "seal": client.get(f"/api/v1/audit/seals/{new}").json(),
        "old_seal": client.get(f"/api/v1/audit/seals/{old}").json(),
        "proof": client.get(f"/api/v1/decisions/{first}/proof").json(),
        "consistency": client.get("/api/v1/audit/consistency", {"first": old}).json(),
        "key": client.get("/api/v1/audit/public-key").json(),
    }
    for name, document in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
    return tmp_path, files


def test_verify_proof_accepts_a_valid_proof_and_says_what_is_wrong_with_a_tampered_one(
    exported, capsys
):
    folder, files = exported
    key = files["key"]["public_key"]
    seal, proof = str(folder / "seal.json"), str(folder / "proof.json")

    # As an auditor runs it: another process, with no database or key of its own.
    valid = subprocess.run(
        [sys.executable, "manage.py", "verify_proof", seal, proof, "--public-key", key],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "ATTEST_VAR_DIR": str(folder / "var")},
    )
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.startswith(f"VALID: decision {files['proof']['decision_id']} is leaf")
    assert not (folder / "var" / "seal-signing.key").exists()

    def refused(seal_file: str, proof_file: str, public_key: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            call_command("verify_proof", seal_file, proof_file, "--public-key", public_key)
        assert exit_info.value.code == 1
        return capsys.readouterr().err

    tampered = dict(files["proof"], audit_path=files["proof"]["audit_path"][::-1])
    (folder / "tampered.json").write_text(json.dumps(tampered))
    assert "the audit path does not lead from the content hash to the seal's root" in refused(
        seal, str(folder / "tampered.json"), key
    )
    forged = dict(files["seal"], root_hash="0" * 64)
    (folder / "forged.json").write_text(json.dumps(forged))
    assert "signature does not match its tree head" in refused(
        str(folder / "forged.json"), proof, key
    )
    other_key = base64.b64encode(bytes(32)).decode()
    assert "the public key given is" in refused(seal, proof, other_key)


def test_verify_proof_refuses_a_proof_that_gives_a_key_twice(exported):
    """{"decision_id": 7, ..., "decision_id": 8}: one verifier would check one decision,
    another the other; a proof must name one."""
    folder, files = exported
    text = json.dumps(files["proof"])
    twice = text.replace('"decision_id": ', '"decision_id": 1, "decision_id": ', 1)
    (folder / "twice.json").write_text(twice)

    with pytest.raises(CommandError, match="'decision_id' is given twice"):
        call_command(
            "verify_proof",
            str(folder / "seal.json"),
            str(folder / "twice.json"),
            "--public-key",
            files["key"]["public_key"],
        )


# --- the migration from the former hash chain -------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_builds_and_signs_the_tree_of_existing_chain_seals(model_version, ingest):
    """Seals made before the log was one tree become its signed tree heads, in order."""
    with recorded_before_form_2():  # (decisions.0014 is unapplied below, and again applied)
        ingest(*DecisionPayloadFactory.build_batch(3))
    call_command("migrate", "decisions", "0005", verbosity=0)
    try:
        insert_chain_seals(seal_hash="0" * 64)  # a chain that does not hold is not signed
        with pytest.raises(RuntimeError, match="Seal 0 does not match the hash chain"):
            call_command("migrate", "decisions", verbosity=0)
        with tampering() as cursor:
            cursor.execute("DELETE FROM decisions_seal")
        insert_chain_seals()
        call_command("migrate", "decisions", verbosity=0)
    finally:
        # Every app: going back unapplied the other apps' migrations that depend on these.
        call_command("migrate", verbosity=0)

    (seal,) = Seal.objects.all()
    assert seal.first_leaf == 0 and seal.tree_size == Decision.objects.count() + seal.event_count
    result = verify_chain()
    assert result.ok, result.first_bad
    assert result.latest_seal["tree_size"] == seal.tree_size
    assert inclusion_holds(inclusion_proof(Decision.objects.order_by("id").last()))


def insert_chain_seals(seal_hash: str | None = None) -> None:
    """One seal as the former sealer wrote it: per-block roots, chained by seal_hash."""
    decisions = list(Decision.objects.order_by("id").values_list("id", "content_hash"))
    events = list(AuditEvent.objects.order_by("id").values_list("id", "content_hash"))
    # sealed after the rows it holds, as the former sealer did (a seal dated before its
    # rows is a backdating problem verification names)
    sealed_at = datetime.now(UTC).replace(microsecond=0)
    document = {
        "index": 0,
        "sealed_at": sealed_at.isoformat(timespec="microseconds"),
        "previous_hash": "0" * 64,
        "decisions": {"count": len(decisions), "last_id": decisions[-1][0], "root": ""},
        "events": {"count": len(events), "last_id": events[-1][0], "root": ""},
    }
    document["decisions"]["root"] = mth([bytes.fromhex(h) for _, h in decisions]).hex()
    document["events"]["root"] = mth([bytes.fromhex(h) for _, h in events]).hex()
    seal_hash = (
        seal_hash
        or hashlib.sha256(
            json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )

    def packed(rows):
        ids = b"".join(pk.to_bytes(8, "little") for pk, _ in rows)
        return ids, b"".join(bytes.fromhex(h) for _, h in rows)

    (decision_ids, decision_leaves), (event_ids, event_leaves) = packed(decisions), packed(events)
    with connection.cursor() as cursor:
        cursor.execute(
            'INSERT INTO decisions_seal ("index", sealed_at, previous_hash, decision_count, '
            "last_decision_id, decisions_root, event_count, last_event_id, events_root, "
            "seal_hash, decision_ids, decision_leaves, event_ids, event_leaves) VALUES "
            "(0, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                connection.ops.adapt_datetimefield_value(sealed_at),
                "0" * 64,
                len(decisions),
                decisions[-1][0],
                document["decisions"]["root"],
                len(events),
                events[-1][0],
                document["events"]["root"],
                seal_hash,
                decision_ids,
                decision_leaves,
                event_ids,
                event_leaves,
            ],
        )


# --- a real worker ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker_queues("verify")
def test_a_real_worker_runs_the_verification_job_requested_through_the_api(
    worker, model_version, ingest, client
):
    grow_log(ingest, batches=(20,))
    with tampering() as cursor:
        cursor.execute(
            "UPDATE decisions_decision SET score = 0.015 WHERE id = %s",
            [Decision.objects.order_by("id").first().pk],
        )

    answer = client.post("/api/v1/audit/verify", {}, format="json")
    assert answer.status_code == 202
    status_url = answer.json()["status_url"]
    wait_until(
        lambda: client.get(status_url).json()["status"] in ("done", "failed"),
        "the worker to verify the log",
    )

    status = client.get(status_url).json()
    assert (status["status"], status["progress"]) == ("done", 100), worker.log.read_text()[-3000:]
    assert status["result"]["ok"] is False
    assert status["result"]["first_bad"]["kind"] == "decision"
    assert status["result"]["decisions"] == Decision.objects.count()


@pytest.mark.django_db(transaction=True)
# The page and its script are the same on both databases; the job on the embedded default's
# worker is the test above.
@pytest.mark.database_neutral
def test_the_audit_page_runs_the_job_and_shows_its_progress_under_the_csp(
    live_server,
    chromium,  # noqa: F811 (the fixture imported above)
    model_version,
    ingest,
    compliance_officer,
    media_root,
    tmp_path,
):
    grow_log(ingest, batches=(5,))
    publishing.wait_until_published()
    celery_app.control.purge()  # no explanations to wait for: the worker verifies only
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, live_server.url, "compliance_officer")
    page.goto(f"{live_server.url}/audit/")

    page.click("text=Verify the whole chain now")
    expect(page.locator("#verification progress")).to_be_visible()  # pending: no worker yet
    expect(page.locator("#verification")).to_contain_text("pending · 0%")
    worker = Worker(media_root, tmp_path / "worker.log", queues=("verify",))
    try:
        expect(page.locator("#verification")).to_contain_text("Verified.", timeout=120_000)
    finally:
        worker.stop()
        celery_app.control.purge()
    expect(page.locator("#verification progress")).to_have_count(0)
    page.screenshot(path=SHOTS / "audit-verified.png", full_page=True)
