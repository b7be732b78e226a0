"""manage.py new_seal_key [--seed-file PATH]: make the next seal signing key, and say how to rotate.

Rotation is a configuration change (README: rotating the signing key): the new
seed becomes ATTEST_SEAL_SIGNING_KEY and the current key's public key joins
ATTEST_SEAL_RETIRED_KEYS, so seals signed before keep verifying. This command
changes nothing itself; it prints the values to deploy.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from auditapp.decisions import signing


class Command(BaseCommand):
    help = (
        "Make a new Ed25519 seal signing key and print what to deploy to rotate to it: the "
        "new ATTEST_SEAL_SIGNING_KEY and ATTEST_SEAL_RETIRED_KEYS with the current key's "
        "public key added. Changes nothing itself."
    )
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument(
            "--seed-file",
            type=Path,
            help="write the new private seed here (mode 0600, never over an existing file) "
            "instead of printing it",
        )

    def handle(self, *args, **options):
        seed = secrets.token_bytes(32)
        seed_b64 = base64.b64encode(seed).decode()
        new_public = signing.public_key_of_seed(seed_b64)
        current = signing.known_keys()
        current_key = next(key for key in current.values() if key.current)
        retired = [*settings.ATTEST_SEAL_RETIRED_KEYS, _b64(current_key.public_key)]
        if options["seed_file"]:
            _write_new(options["seed_file"], seed_b64)
            setting = f"ATTEST_SEAL_SIGNING_KEY=$(cat {options['seed_file']})"
        else:
            setting = f"ATTEST_SEAL_SIGNING_KEY={seed_b64}"
        self.stdout.write(
            f"New seal signing key {signing.key_id(new_public)}, public key "
            f"{_b64(new_public)}\n"
            "\n"
            "To rotate to it, deploy both settings to the web app, every worker and beat at once:\n"
            f"  {setting}\n"
            f"  ATTEST_SEAL_RETIRED_KEYS={','.join(retired)}\n"
            f"(the current key {current_key.key_id} retires: its public key is added last, after "
            "the keys retired before it).\n"
            "The next seal is signed by the new key; `manage.py verify_chain` then checks every "
            "seal with the key its key_id names, and GET /api/v1/audit/public-key lists both.\n"
            "Keep the new seed as secret as the old one. Once a seal of the new key verifies, "
            "destroy the old seed: verifying needs only its public key, and whoever holds it "
            "could still sign seals that pass as the retired key's."
        )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _write_new(path: Path, seed_b64: str) -> None:
    """The seed in a new file only its owner reads; an existing file (a key?) is never replaced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandError(f"{path} exists already: choose a new file for the new key.") from None
    except OSError as error:
        raise CommandError(f"Cannot write {path}: {error.strerror}.") from None
    with os.fdopen(fd, "w") as out:
        out.write(seed_b64 + "\n")
