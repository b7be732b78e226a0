"""Encryption at rest of a decision's sensitive inputs: the one place that seals and opens them.

A decision's sensitive values (the schema's `sensitive` features) are stored as one
AES-256-GCM blob of their canonical JSON ({name: value}), not in `inputs`:

    b"\\x01" | len(key id) (1 byte) | key id (ASCII) | nonce (12 bytes) | ciphertext and tag

The additional data binds the blob to its row: the decision's model id and request_id
(row_binding), known before the insert, unique together and never changed. A blob copied
to another row fails to open. The key id says which data key sealed it; rotation
(decisions/rotation.py) re-seals under the current key and never touches the content
hash, which commits to the salted commitment of the plaintext.

Exact search on a sensitive value uses a blind index: HMAC-SHA256, under a key of its own,
of the canonical JSON of [name, value], truncated to 16 bytes (hex): equal values give equal
tokens, and without that key a token tells nothing about the value.

Keys (settings.py): ATTEST_DATA_KEYS, `keyid:base64(32 bytes)` comma-separated, the first
encrypts and every one decrypts; ATTEST_BLIND_INDEX_KEY. Production must set both; elsewhere
each is made once and kept in var/ (ATTEST_DATA_KEY_FILE, ATTEST_BLIND_INDEX_KEY_FILE), as
the seal-signing key is.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

from auditapp.errors import Unavailable
from auditapp.hashing import canonical_bytes, canonical_json

FORMAT = 1
NONCE_BYTES = 12
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
AAD_PREFIX = b"attest.sensitive-inputs.v1:"
TOKEN_BYTES = 16


class UnreadableInputs(Unavailable):
    """A sealed blob that cannot be opened: its key is not configured, or it does not
    belong to this row (moved, altered). 503: nothing the caller can fix by retrying
    differently; the message names the key id, never a value."""

    code = "sensitive_inputs_unreadable"


@dataclass(frozen=True)
class Keyring:
    current: str  # the id of the key that encrypts
    keys: dict[str, bytes]  # every key that decrypts, by id


def parse_key(text: str, *, what: str) -> bytes:
    """32 raw bytes from base64, or ValueError saying what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def parse_data_keys(entries: Iterable[str]) -> Keyring | None:
    """`keyid:base64` entries, the first encrypting; None when there are none."""
    keys: dict[str, bytes] = {}
    for entry in entries:
        key_id, _, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not KEY_ID.fullmatch(key_id):
            raise ValueError(
                "ATTEST_DATA_KEYS: each entry is keyid:base64(32 bytes), the key id of "
                f"letters, digits, - or _ (1 to 32), got {key_id[:40]!r}"
            )
        if key_id in keys:
            raise ValueError(f"ATTEST_DATA_KEYS lists key id {key_id!r} twice")
        keys[key_id] = parse_key(encoded, what=f"ATTEST_DATA_KEYS key {key_id!r}")
    return Keyring(next(iter(keys)), keys) if keys else None


def parse_blind_index_key(text: str) -> bytes:
    return parse_key(text, what="ATTEST_BLIND_INDEX_KEY")


def keyring() -> Keyring:
    return _keyring(tuple(settings.ATTEST_DATA_KEYS), str(settings.ATTEST_DATA_KEY_FILE))


@functools.cache
def _keyring(configured: tuple[str, ...], key_file: str) -> Keyring:
    """The configured keys; without them, one key made once and kept in var/."""
    if configured:
        found = parse_data_keys(configured)
    else:
        line = _made_once(Path(key_file), lambda: f"local-{secrets.token_hex(4)}:{_new_key()}")
        found = parse_data_keys([line])
    if found is None:
        raise ValueError("ATTEST_DATA_KEYS holds no key")
    return found


def blind_index_key() -> bytes:
    return _blind_key(settings.ATTEST_BLIND_INDEX_KEY, str(settings.ATTEST_BLIND_INDEX_KEY_FILE))


@functools.cache
def _blind_key(configured: str, key_file: str) -> bytes:
    return parse_blind_index_key(configured or _made_once(Path(key_file), _new_key))


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _made_once(path: Path, make) -> str:
    """The line kept in `path`, written first if there is none (processes may race: one wins)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(make() + "\n")
        try:
            os.link(temporary, path)  # atomic, and refuses to replace another's key
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text().strip()


# --- sealing and opening ----------------------------------------------------------


def split_inputs(
    inputs: dict[str, Any], sensitive: Collection[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the values stored in clear, the sensitive values to seal)."""
    clear = {k: v for k, v in inputs.items() if k not in sensitive}
    return clear, {k: v for k, v in inputs.items() if k in sensitive}


def seal(
    values: dict[str, Any], row: str, ring: Keyring | None = None, nonce: bytes | None = None
) -> bytes:
    """The blob of `values` under the current key, bound to `row` (row_binding); `nonce`, if
    given, must be NONCE_BYTES fresh from the OS's CSPRNG (a batch draws them at once)."""
    ring = ring or keyring()
    key_id = ring.current.encode()
    nonce = nonce or secrets.token_bytes(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"an AES-GCM nonce is {NONCE_BYTES} bytes, not {len(nonce)}")
    sealed = _cipher(ring.keys[ring.current]).encrypt(
        nonce, canonical_bytes(values), AAD_PREFIX + row.encode()
    )
    return bytes([FORMAT, len(key_id)]) + key_id + nonce + sealed


@functools.lru_cache(maxsize=16)
def _cipher(key: bytes) -> AESGCM:
    return AESGCM(key)


def key_id_of(blob: bytes) -> str:
    blob = bytes(blob)
    if len(blob) < 2 or blob[0] != FORMAT:
        raise UnreadableInputs("The sensitive inputs are stored in an unknown format.")
    return blob[2 : 2 + blob[1]].decode("ascii", "replace")


def open_sealed(blob: bytes, row: str, ring: Keyring | None = None) -> dict[str, Any]:
    """The values sealed in `blob`; UnreadableInputs if the key is missing or the blob was
    not sealed for `row`."""
    ring = ring or keyring()
    blob = bytes(blob)
    key_id = key_id_of(blob)
    key = ring.keys.get(key_id)
    if key is None:
        raise UnreadableInputs(
            f"The sensitive inputs are sealed with data key {key_id!r}, which is not "
            "configured (ATTEST_DATA_KEYS).",
            details={"key_id": key_id},
        )
    start = 2 + blob[1]
    nonce, sealed = blob[start : start + NONCE_BYTES], blob[start + NONCE_BYTES :]
    try:
        plain = _cipher(key).decrypt(nonce, sealed, AAD_PREFIX + row.encode())
    except InvalidTag:
        raise UnreadableInputs(
            f"The sensitive inputs do not open with data key {key_id!r}: the key is wrong "
            "or they were not sealed for this decision.",
            details={"key_id": key_id},
        ) from None
    return orjson.loads(plain)


def row_binding(model_id: int, request_id: str) -> str:
    """What a blob is bound to (its additional data): the row's (model, request_id)."""
    return canonical_json([model_id, request_id])


def seal_inputs(
    inputs: dict[str, Any],
    sensitive: Collection[str],
    row: str,
    nonce: bytes | None = None,
    keys: Keys | None = None,
) -> tuple[dict[str, Any], bytes | None, dict[str, str] | None]:
    """(the clear inputs, the blob of the sensitive ones, their blind index) of one row;
    the blob and index are None when the row has no sensitive value. `keys`: the ones in
    force, read once for a batch's rows."""
    clear, secret = split_inputs(inputs, sensitive)
    if not secret:
        return inputs, None, None
    keys = keys or Keys()
    return clear, seal(secret, row, keys.ring, nonce), blind_tokens(secret, keys.blind_index)


class Keys:
    """The keyring and the blind index's key, each read from the settings when first
    needed (a batch seals thousands of rows; each read looks the settings up)."""

    @functools.cached_property
    def ring(self) -> Keyring:
        return keyring()

    @functools.cached_property
    def blind_index(self) -> bytes:
        return blind_index_key()


def merged(clear: dict[str, Any], blob: bytes | None, row: str) -> dict[str, Any]:
    """A decision's full inputs: its clear values and, if any, its sealed ones."""
    if blob is None:
        return clear
    return {**clear, **open_sealed(blob, row)}


# --- the blind index ----------------------------------------------------------------


def blind_token(name: str, value: Any, key: bytes | None = None) -> str:
    """The token of one sensitive value: exact matches only (no order, no prefix).

    A number is tokenised as a float, so 52000 and 52000.0 (equal in JSON, and to the
    search) give one token."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = float(value)
    digest = hmac.new(key or blind_index_key(), canonical_bytes([name, value]), hashlib.sha256)
    return digest.hexdigest()[: 2 * TOKEN_BYTES]


def blind_tokens(values: dict[str, Any], key: bytes | None = None) -> dict[str, str]:
    key = key or blind_index_key()
    return {name: blind_token(name, value, key) for name, value in values.items()}
