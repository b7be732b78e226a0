"""Signing seals: Ed25519 over the RFC 8785 canonical JSON of a tree head.

A signature lets an auditor who keeps the log's public key check a seal, or a
proof against it, without trusting the database it came from: someone able to
rewrite the tables cannot sign a rewritten log without the private key, which
lives in the environment (ATTEST_SEAL_SIGNING_KEY), not in the database.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import secrets
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


def public_key_document() -> dict[str, str]:
    """What GET /api/v1/audit/public-key answers, and what an auditor keeps."""
    raw = raw_public_key(signing_key().public_key())
    return {
        "key_id": key_id(raw),
        "algorithm": ALGORITHM,
        "public_key": base64.b64encode(raw).decode(),
    }


def own_key_id() -> str:
    return public_key_document()["key_id"]


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
