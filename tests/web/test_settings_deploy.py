"""Production settings pass Django's deployment checklist; the embedded default needs nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# `manage.py` inherits this run's broker (CELERY_BROKER_URL): check it on both.
pytestmark = pytest.mark.embedded

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DEBUG")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "auditapp.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


DATA_KEYS = {
    "ATTEST_DATA_KEYS": "k1:ZGF0YSBrZXkgb2YgYSB0ZXN0LCAzMiBieXRlcyBsb24=",
    "ATTEST_BLIND_INDEX_KEY": "YmxpbmQgaW5kZXgga2V5IG9mIGEgdGVzdCwgMzIgYnk=",
}


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_ENV="production",
        SECRET_KEY="k" * 64 + "-not-a-real-secret-but-long-and-random-enough-9f8e7d",
        ALLOWED_HOSTS="attest.example.com",
        ATTEST_SEAL_SIGNING_KEY="c2VlZCBvZiBhIHRlc3Qgc2lnbmluZyBrZXksIDMyIGI=",
        **DATA_KEYS,
        ATTEST_VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = manage("check", DJANGO_ENV="production", ATTEST_VAR_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_to_start_without_a_seal_signing_key(tmp_path):
    """Seals signed by a key made up on the spot would name no key an auditor kept."""
    secret = "k" * 64 + "-not-a-real-secret-but-long-and-random-enough-9f8e7d"
    result = manage(
        "check", DJANGO_ENV="production", SECRET_KEY=secret, ATTEST_VAR_DIR=str(tmp_path)
    )
    assert result.returncode != 0
    assert "ATTEST_SEAL_SIGNING_KEY" in result.stderr
    assert not (tmp_path / "seal-signing.key").exists()

    malformed = manage("check", ATTEST_SEAL_SIGNING_KEY="not base64!", ATTEST_VAR_DIR=str(tmp_path))
    assert malformed.returncode != 0
    assert "32-byte Ed25519 seed" in malformed.stderr


def test_production_refuses_to_start_without_data_keys(tmp_path):
    """Sensitive inputs sealed under a key made up on the spot would be lost with the host."""
    result = manage(
        "check",
        DJANGO_ENV="production",
        SECRET_KEY="k" * 64 + "-not-a-real-secret-but-long-and-random-enough-9f8e7d",
        ATTEST_SEAL_SIGNING_KEY="c2VlZCBvZiBhIHRlc3Qgc2lnbmluZyBrZXksIDMyIGI=",
        ATTEST_VAR_DIR=str(tmp_path),
    )
    assert result.returncode != 0
    assert "ATTEST_DATA_KEYS" in result.stderr
    assert not (tmp_path / "data-keys").exists()

    short = manage("check", ATTEST_DATA_KEYS="k1:c2hvcnQ=", ATTEST_VAR_DIR=str(tmp_path))
    assert short.returncode != 0
    assert "ATTEST_DATA_KEYS key 'k1' must be 32 bytes, got 5" in short.stderr
    blind = manage("check", ATTEST_BLIND_INDEX_KEY="not base64!", ATTEST_VAR_DIR=str(tmp_path))
    assert blind.returncode != 0
    assert "ATTEST_BLIND_INDEX_KEY is not base64" in blind.stderr


def test_a_read_replica_needs_postgresql(tmp_path):
    """SQLite has no replicas: a DATABASE_REPLICA_URL beside it is a mistake, said at start-up."""
    result = manage(
        "check",
        DATABASE_REPLICA_URL="postgres://postgres@127.0.0.1:5432/attest",
        ATTEST_VAR_DIR=str(tmp_path),
    )
    assert result.returncode != 0
    assert "DATABASE_REPLICA_URL needs DATABASE_URL to name PostgreSQL" in result.stderr


def test_single_sign_on_needs_the_issuer_and_the_client_together(tmp_path):
    result = manage(
        "check", ATTEST_OIDC_ISSUER="https://idp.bank.example", ATTEST_VAR_DIR=str(tmp_path)
    )
    assert result.returncode != 0
    assert "ATTEST_OIDC_CLIENT_ID" in result.stderr


def test_the_role_map_is_a_json_object_of_known_roles(tmp_path):
    sso = {
        "ATTEST_OIDC_ISSUER": "https://idp.bank.example/realms/bank",
        "ATTEST_OIDC_CLIENT_ID": "attest",
        "ATTEST_OIDC_CLIENT_SECRET": "secret",
        "ATTEST_VAR_DIR": str(tmp_path),
    }
    not_json = manage("check", ATTEST_OIDC_ROLE_MAP="risk-admins=admin", **sso)
    assert not_json.returncode != 0
    assert "ATTEST_OIDC_ROLE_MAP must be a JSON object" in not_json.stderr
    unknown = manage("check", ATTEST_OIDC_ROLE_MAP='{"risk-admins": "root"}', **sso)
    assert unknown.returncode != 0
    assert "attest.E001" in unknown.stderr and "root" in unknown.stderr
    good = manage(
        "shell",
        "-c",
        "from django.conf import settings; "
        "print(' '.join(settings.CONTENT_SECURITY_POLICY['DIRECTIVES']['form-action']))",
        ATTEST_OIDC_ROLE_MAP='{"risk-admins": "admin", "audit": "auditor"}',
        **sso,
    )
    assert good.returncode == 0, good.stderr
    # Logging out redirects a form to the IdP's end-session endpoint.
    assert "'self' https://idp.bank.example" in good.stdout


def test_production_wants_the_issuer_over_https(tmp_path):
    result = manage(
        "check",
        DJANGO_ENV="production",
        SECRET_KEY="k" * 64 + "-not-a-real-secret-but-long-and-random-enough-9f8e7d",
        ATTEST_SEAL_SIGNING_KEY="c2VlZCBvZiBhIHRlc3Qgc2lnbmluZyBrZXksIDMyIGI=",
        **DATA_KEYS,
        ATTEST_OIDC_ISSUER="http://idp.bank.example",
        ATTEST_OIDC_CLIENT_ID="attest",
        ATTEST_OIDC_CLIENT_SECRET="secret",
        ATTEST_VAR_DIR=str(tmp_path),
    )
    assert result.returncode != 0
    assert "https://" in result.stderr
