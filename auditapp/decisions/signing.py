"""Signing seals: Ed25519 over the RFC 8785 canonical JSON of a tree head.

A signature lets an auditor who keeps the log's public key check a seal, or a
proof against it, without trusting the database it came from: someone able to
rewrite the tables cannot sign a rewritten log without the private key, which
lives in the environment (ATTEST_SEAL_SIGNING_KEY), not in the database.

Keys rotate: the current key signs new seals, and the public keys of earlier
ones (ATTEST_SEAL_RETIRED_KEYS) stay trusted for the seals they signed, so that
a log outlives any one key. Each seal names its key by `key_id`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings

ALGORITHM = "Ed25519"
SIGNED_FIELDS = ("tree_size", "root_hash", "sealed_at")


def statement(tree_size: int, root_hash: str, sealed_at: str) -> bytes:
    """The bytes a seal's signature covers: RFC 8785 JSON of its tree head."""
    return rfc8785.dumps({"tree_size": tree_size, "root_hash": root_hash, "sealed_at": sealed_at})


def key_id(public_key: bytes) -> str:
    """The first 16 hex digits of the sha256 of the raw 32-byte public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(tree_size: int, root_hash: str, sealed_at: str) -> tuple[str, str]:
    """(signature as base64, key_id) of a tree head, with this installation's key."""
    private = signing_key()
    signature = private.sign(statement(tree_size, root_hash, sealed_at))
    return base64.b64encode(signature).decode(), key_id(raw_public_key(private.public_key()))


def public_key_document(raw: bytes | None = None) -> dict[str, str]:
    """A public key as an auditor keeps it (default: the current key's)."""
    raw = raw_public_key(signing_key().public_key()) if raw is None else raw
    return {
        "key_id": key_id(raw),
        "algorithm": ALGORITHM,
        "public_key": base64.b64encode(raw).decode(),
    }


def own_key_id() -> str:
    return public_key_document()["key_id"]


@dataclass(frozen=True)
class KnownKey:
    """A public key seals of this log may be signed with: the current one or a retired one."""

    key_id: str
    public_key: bytes
    current: bool


def known_keys() -> dict[str, KnownKey]:
    """Every key this log trusts, by key_id: the retired ones oldest first, then the current one."""
    current = raw_public_key(signing_key().public_key())
    keys = {
        key_id(raw): KnownKey(key_id(raw), raw, False)
        for raw in parse_public_keys(settings.ATTEST_SEAL_RETIRED_KEYS)
        if raw != current
    }
    keys[key_id(current)] = KnownKey(key_id(current), current, True)
    return keys


def seal_signature_problem(
    seal: dict[str, Any], keys: dict[str, KnownKey], name: str = "it"
) -> str | None:
    """What is wrong with a seal's signature, checked with the key its key_id names; or None.

    A seal naming no known key is refused rather than trusted: a forged seal
    must not be able to bring its own key. `name` is how the answer calls the seal.
    """
    whose = "its" if name == "it" else f"{name}'s"
    key = keys.get(str(seal.get("key_id")))
    if key is None:
        current = next(k.key_id for k in keys.values() if k.current)
        return (
            f"{name} is signed by another key ({seal.get('key_id')}) than this log's: neither "
            f"the current key ({current}) nor a retired one (ATTEST_SEAL_RETIRED_KEYS)"
        )
    if not signature_holds(seal, key.public_key):
        retired = "" if key.current else f" (retired key {key.key_id})"
        return f"{whose} signature does not match its tree head{retired}"
    return None


def parse_public_keys(
    given: str | Iterable[str], *, name: str = "ATTEST_SEAL_RETIRED_KEYS"
) -> list[bytes]:
    """Base64 Ed25519 public keys, comma-separated: their raw bytes, or ValueError naming one.

    Each is the `public_key` GET /api/v1/audit/public-key answered while it was
    current. Blank entries (a trailing comma, line breaks) are ignored.
    """
    entries = [e.strip() for e in (given.split(",") if isinstance(given, str) else given)]
    entries = [entry for entry in entries if entry]
    keys: list[bytes] = []
    for number, entry in enumerate(entries, 1):
        shown = entry if len(entry) <= 20 else entry[:16] + "..."
        where = f"{name}: entry {number} of {len(entries)} ({shown!r})"
        try:
            raw = decode_key(entry, what="public key")
        except ValueError as error:
            raise ValueError(
                f"{where}: {error}; give the base64 `public_key` of GET /api/v1/audit/public-key"
            ) from None
        if raw in keys:
            raise ValueError(f"{where} repeats key {key_id(raw)}")
        keys.append(raw)
    return keys


def signature_holds(seal: dict[str, Any], public_key: bytes) -> bool:
    """Whether the seal document's signature is the key's over its tree head."""
    try:
        message = statement(int(seal["tree_size"]), str(seal["root_hash"]), str(seal["sealed_at"]))
        signature = base64.b64decode(str(seal["signature"]), validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidSignature):
        return False
    return True


def decode_key(text: str, *, what: str = "key") -> bytes:
    """32 raw bytes from base64, or ValueError saying what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {what} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"the {what} must be 32 bytes, got {len(raw)}")
    return raw


def public_key_of_seed(seed: str) -> bytes:
    """The raw public key of a base64 seed (the form ATTEST_SEAL_SIGNING_KEY takes)."""
    return raw_public_key(Ed25519PrivateKey.from_private_bytes(decode_key(seed)).public_key())


def signing_key() -> Ed25519PrivateKey:
    return _key(settings.ATTEST_SEAL_SIGNING_KEY, str(settings.ATTEST_SEAL_KEY_FILE))


@functools.cache
def _key(configured: str, key_file: str) -> Ed25519PrivateKey:
    """The configured key; on the embedded default, one made once and kept in var/."""
    seed = decode_key(configured) if configured else _seed_from_file(Path(key_file))
    return Ed25519PrivateKey.from_private_bytes(seed)


def _seed_from_file(path: Path) -> bytes:
    """The seed kept in `path`, written first if there is none (processes may race: one wins)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        try:
            os.link(temporary, path)  # atomic, and refuses to replace another's key
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return decode_key(path.read_text(), what=f"key in {path}")
