"""manage.py verify_proof SEAL.json PROOF.json --public-key KEY: an auditor's offline check.

Reads no database: the seal, the proof and the log's public keys are all it
needs, and the only code it runs is decisions/merkle.py and decisions/signing.py.
Keys rotate, so several public keys may be given: each seal is checked with the
one its key_id names (a consistency proof may span a rotation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from auditapp import textcheck
from auditapp.decisions import log, merkle, signing


class Command(BaseCommand):
    help = (
        "Check a proof offline: the seal's Ed25519 signature against the log's public key, "
        "then an inclusion proof (GET /api/v1/decisions/{id}/proof or "
        "GET /api/v1/audit/events/{id}/proof) against the seal's root, "
        "or a consistency proof (GET /api/v1/audit/consistency) from the seal to a later one "
        "(--later-seal). Exits 0 when valid, 1 otherwise, saying why."
    )
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("seal", type=Path, help="a seal: GET /api/v1/audit/seals/{tree_size}")
        parser.add_argument("proof", type=Path, help="an inclusion or a consistency proof")
        parser.add_argument(
            "--public-key",
            required=True,
            action="append",
            help="the log's public key: its base64, or a file holding that or the JSON of "
            "GET /api/v1/audit/public-key (every key it lists); give it again for each "
            "key you kept: a seal is checked with the one its key_id names",
        )
        parser.add_argument(
            "--later-seal", type=Path, help="for a consistency proof: the seal of its second tree"
        )

    def handle(self, *args, **options):
        public = [key for given in options["public_key"] for key in self._public_keys(given)]
        seal = self._json(options["seal"])
        proof = self._json(options["proof"])
        problems = check_seal(seal, public, "the seal")
        if "audit_path" in proof:
            problems += check_inclusion(proof, seal)
            kind = proven_kind(proof) or "decision"
            record = f"{RECORD_NAMES.get(kind, kind)} {proof.get(f'{kind}_id')}"
            what = f"{record} is leaf {proof.get('leaf_index')} of"
        elif "consistency_proof" in proof:
            later = self._json(options["later_seal"]) if options["later_seal"] else None
            if later is None:
                problems.append("a consistency proof needs the later seal too (--later-seal)")
            else:
                problems += check_seal(later, public, "the later seal")
                problems += check_consistency(proof, seal, later)
            what = f"the tree of {proof.get('second')} leaves extends"
        else:
            problems.append(f"{options['proof']} is neither an inclusion nor a consistency proof")
        if problems:
            self.stderr.write("INVALID: " + "; ".join(problems) + ".")
            raise SystemExit(1)
        later_key = later["key_id"] if "consistency_proof" in proof else seal["key_id"]
        self.stdout.write(
            f"VALID: {what} the tree of {seal['tree_size']} leaves, root {seal['root_hash']}, "
            f"sealed at {seal['sealed_at']}, signed by key {seal['key_id']}"
            + (f" (the later seal by key {later_key})." if later_key != seal["key_id"] else ".")
        )

    def _json(self, path: Path) -> dict[str, Any]:
        try:
            document = textcheck.loads(path.read_text())
        except FileNotFoundError as error:
            raise CommandError(f"No such file: {path}") from error
        except ValueError as error:  # undecodable, not JSON, or a key given twice
            raise CommandError(f"{path} is not JSON: {error}") from error
        if not isinstance(document, dict):
            raise CommandError(f"{path} must hold one JSON object.")
        return document

    def _public_keys(self, given: str) -> list[bytes]:
        """The keys one --public-key gives: base64, or a file of it or of the endpoint's JSON."""
        texts = [given]
        path = Path(given)
        if len(given) != 44 and path.is_file():  # 44: the length of 32 bytes in base64
            text = path.read_text().strip()
            texts = [text]
            if text.startswith("{"):
                try:
                    document = textcheck.loads(text)
                    texts = [str(document.get("public_key", ""))]
                    texts += [str(key["public_key"]) for key in document.get("keys", [])]
                except (ValueError, AttributeError, KeyError, TypeError) as error:
                    raise CommandError(
                        f"{path} is not the JSON of GET /api/v1/audit/public-key: {error}"
                    ) from None
        try:
            return [signing.decode_key(text, what="public key") for text in texts]
        except ValueError as error:
            raise CommandError(
                f"{error}: give the base64 of GET /api/v1/audit/public-key"
            ) from None


RECORD_NAMES = {"decision": "decision", "event": "audit event"}


def check_seal(seal: dict[str, Any], public: list[bytes], name: str) -> list[str]:
    """The seal's signature, checked with the given key its key_id names."""
    missing = [f for f in (*signing.SIGNED_FIELDS, "signature", "key_id") if f not in seal]
    if missing:
        return [f"{name} lacks {', '.join(missing)}: it is not a seal of GET /api/v1/audit/seals"]
    by_id = {signing.key_id(key): key for key in public}
    if seal["key_id"] not in by_id:
        given = ", ".join(dict.fromkeys(by_id))
        keys = "the public key given is" if len(by_id) == 1 else "the public keys given are"
        return [f"{name} is signed by key {seal['key_id']}, {keys} {given}"]
    if not signing.signature_holds(seal, by_id[seal["key_id"]]):
        return [f"{name}'s signature does not match its tree head (altered, or not this log's)"]
    return []


def proven_kind(proof: dict[str, Any]) -> str | None:
    """Which kind of record an inclusion proof is for: the one whose `<kind>_id` it names."""
    return next((kind for kind in log.PREFIX if f"{kind}_id" in proof), None)


def check_inclusion(proof: dict[str, Any], seal: dict[str, Any]) -> list[str]:
    kind = proven_kind(proof)
    if kind is None:
        named = " or ".join(f"{kind}_id" for kind in log.PREFIX)
        return [f"the inclusion proof names no record ({named})"]
    try:
        leaf = log.leaf_data(kind, bytes.fromhex(proof["content_hash"]))
        index, size = int(proof["leaf_index"]), int(proof["tree_size"])
        path = [bytes.fromhex(node) for node in proof["audit_path"]]
    except (KeyError, TypeError, ValueError):
        return ["the inclusion proof lacks content_hash, leaf_index, tree_size or audit_path"]
    if size != seal.get("tree_size") or proof.get("root_hash") != seal.get("root_hash"):
        return [
            f"the proof is for the tree of {size} leaves with root {proof.get('root_hash')}, "
            f"the seal's is {seal.get('tree_size')} with root {seal.get('root_hash')}"
        ]
    if not merkle.verify_inclusion(leaf, index, size, path, bytes.fromhex(seal["root_hash"])):
        return ["the audit path does not lead from the content hash to the seal's root"]
    return []


def check_consistency(
    proof: dict[str, Any], seal: dict[str, Any], later: dict[str, Any]
) -> list[str]:
    try:
        first, second = int(proof["first"]), int(proof["second"])
        path = [bytes.fromhex(node) for node in proof["consistency_proof"]]
    except (KeyError, TypeError, ValueError):
        return ["the consistency proof lacks first, second or consistency_proof"]
    if (first, proof.get("first_root")) != (seal.get("tree_size"), seal.get("root_hash")):
        return [f"the proof starts from the tree of {first} leaves, not the seal's"]
    if (second, proof.get("second_root")) != (later.get("tree_size"), later.get("root_hash")):
        return [f"the proof ends at the tree of {second} leaves, not the later seal's"]
    roots = bytes.fromhex(seal["root_hash"]), bytes.fromhex(later["root_hash"])
    if not merkle.verify_consistency(first, second, *roots, path):
        return ["the consistency proof does not show the later tree extends the seal's"]
    return []
