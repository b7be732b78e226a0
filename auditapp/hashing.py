"""The content hash of a decision: sha256 over a canonical JSON of its recorded fields.

Canonical JSON here is: keys sorted, no whitespace, UTF-8 (no escapes of non-ASCII text
beyond what JSON requires), numbers in their shortest round-trip form as orjson
writes them (1e-7, 52000.0, 12), timestamps as UTC ISO-8601 with microseconds
("2026-11-20T10:00:00.000000+00:00"). Anyone can recompute it from an exported
decision: in Python, orjson.dumps(document, option=orjson.OPT_SORT_KEYS).

Sensitive inputs are not in the document as values but as one salted commitment
(`commitment`): sha256 over {"salt", "values"} with 16 random bytes of salt kept
per decision. Whoever may see the values gets the salt and can check them; whoever
may not cannot test guesses against the hash, since each guess would also need the
salt. Decisions recorded before commitments (no salt) hash their inputs in clear.

A decision the app served itself (serving/) also has an `arm` (production, canary,
fallback or shadow) and, for a shadow decision, `served_by` (the id of the decision
that was served): facts about the decision, so its document holds both
(SERVED_FIELDS). A decision without an arm (ingested, or recorded before serving)
has the document it always had: their hashes are unchanged.

Document forms. A decision recorded from document form 2 on (`document_form` = 2)
commits to every input: `inputs` is a salted commitment to the non-sensitive inputs,
with a salt derived from the decision's (inputs_salt: HMAC-SHA256(salt, "inputs"),
first 16 bytes), `sensitive_inputs` the commitment to the sensitive ones as before,
and `document_form`: 2. Giving a reader the derived salt lets them check the inputs
they may see without learning anything that helps test guesses of the sensitive ones.
Erasing a decision's personal inputs (decisions/erasure.py) keeps the two commitments
(`kept`) and destroys the values and the salt: the document, built from the kept
commitments, hashes as before, so the sealed log still proves every other field.
Decisions without a form (null) have the documents described above, unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import orjson

HASHED_FIELDS = (
    "artifact_sha256",
    "inputs",
    "metadata",
    "model",
    "predicted_at",
    "prediction",
    "recorded_at",
    "request_id",
    "score",
    "source",
    "subject_ref",
    "version",
)
# In the document only when the decision has an arm (served by the app itself).
SERVED_FIELDS = ("arm", "served_by")
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
SALT_BYTES = 16
# The document form of decisions recorded now: every input committed to (see above).
COMMITTED_FORM = 2
KEPT_COMMITMENTS = ("inputs", "sensitive_inputs")


def canonical_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _encode_time(value: Any) -> str:
    if isinstance(value, datetime):
        return canonical_time(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_ip(ip: str | None) -> str | None:
    """An IP address as hashed: its standard compressed text form."""
    return None if ip is None else str(ipaddress.ip_address(ip))


def canonical_bytes(value: Any) -> bytes:
    """Canonical JSON as UTF-8. Values must be finite (validation refuses NaN and Infinity)."""
    return orjson.dumps(value, default=_encode_time, option=_OPTIONS)


def canonical_json(value: Any) -> str:
    return canonical_bytes(value).decode()


def sha256_hex(document: Any) -> str:
    """sha256 hex of a document's canonical JSON: the one hash every sealed record uses."""
    return hashlib.sha256(canonical_bytes(document)).hexdigest()


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_BYTES)


def commitment(salt: bytes, values: dict[str, Any]) -> str:
    """A salted commitment to `values`: binding, and no dictionary oracle without the salt."""
    return sha256_hex({"salt": salt.hex(), "values": values})


def inputs_salt(salt: bytes) -> bytes:
    """The salt of a form-2 decision's non-sensitive inputs, derived from its own salt."""
    return hmac.new(salt, b"inputs", hashlib.sha256).digest()[:SALT_BYTES]


def input_commitments(
    inputs: dict[str, Any], sensitive: Collection[str], salt: bytes
) -> dict[str, str]:
    """A form-2 decision's commitments: what erasure keeps of its inputs."""
    return {
        "inputs": commitment(
            inputs_salt(salt), {k: v for k, v in inputs.items() if k not in sensitive}
        ),
        "sensitive_inputs": commitment(salt, {k: v for k, v in inputs.items() if k in sensitive}),
    }


def decision_document(
    fields: dict[str, Any],
    sensitive: Collection[str],
    salt: bytes | None,
    form: int | None = None,
    kept: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What a decision's content hash covers: HASHED_FIELDS (and SERVED_FIELDS for a
    served decision), sensitive inputs committed to; in form 2 every input committed to,
    from the values and salt or, once they are erased, from the `kept` commitments."""
    document = {name: fields[name] for name in HASHED_FIELDS}
    if fields.get("arm") is not None:
        document.update({name: fields.get(name) for name in SERVED_FIELDS})
    if form == COMMITTED_FORM:
        if kept is None:
            if salt is None:
                raise ValueError("a form-2 decision has its salt or its kept commitments")
            kept = input_commitments(fields["inputs"], sensitive, salt)
        document.update({name: kept[name] for name in KEPT_COMMITMENTS})
        document["document_form"] = COMMITTED_FORM
        return document
    if salt is None:  # recorded before commitments existed
        return document
    inputs = fields["inputs"]
    document["inputs"] = {k: v for k, v in inputs.items() if k not in sensitive}
    document["sensitive_inputs"] = commitment(
        salt, {k: v for k, v in inputs.items() if k in sensitive}
    )
    return document


def content_hash(
    fields: dict[str, Any],
    sensitive: Collection[str] = (),
    salt: bytes | None = None,
    form: int | None = None,
    kept: dict[str, str] | None = None,
) -> str:
    """sha256 hex of the canonical JSON of the decision's document (decision_document)."""
    return sha256_hex(decision_document(fields, sensitive, salt, form, kept))
