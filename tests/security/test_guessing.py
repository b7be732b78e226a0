"""Guessing is limited: sign-in lockout per username and per address, API rates, bad tokens.

Each test counts in a cache of its own (a fresh key prefix), so counters never carry
over between tests. Addresses are documentation ranges (RFC 5737), never contacted.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.test import Client
from rest_framework.test import APIClient

from auditapp.accounts.models import AuditEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
DECISIONS = "/api/v1/decisions"


@pytest.fixture(autouse=True)
def own_cache(settings):
    settings.CACHES = {
        "default": {**django_settings.CACHES["default"], "KEY_PREFIX": f"t-{uuid.uuid4().hex}"}
    }


@pytest.fixture
def limit() -> int:
    """The configured limit, not one made up for the test: 10 unless the environment says."""
    return django_settings.AXES_FAILURE_LIMIT


def sign_in(username: str, password: str, address: str, url: str = LOGIN):
    return Client().post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in(response) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.client.session


def wait_until(condition, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout} s")


class TestSignInLockout:
    def test_wrong_passwords_lock_the_username_even_against_the_right_one(
        self, compliance_officer, auditor, limit
    ):
        for _ in range(limit - 1):
            response = sign_in("compliance_officer", "wrong", "192.0.2.1")
            assert response.status_code == 200  # the form again, with its error
        locked = sign_in("compliance_officer", "wrong", "192.0.2.1")

        assert locked.status_code == 429
        assert b"Sign-in paused" in locked.content
        cool_off = int(django_settings.AXES_COOLOFF_TIME.total_seconds())
        assert locked["Retry-After"] == str(cool_off)
        right = sign_in("compliance_officer", PASSWORD, "192.0.2.1")
        assert right.status_code == 429 and not signed_in(right)
        elsewhere = sign_in("compliance_officer", PASSWORD, "198.51.100.7")
        assert elsewhere.status_code == 429 and not signed_in(elsewhere)
        assert signed_in(sign_in("auditor", PASSWORD, "198.51.100.8"))  # others are not locked

        (event,) = AuditEvent.objects.filter(action="auth.locked_out")
        assert (event.actor_name, event.ip) == ("compliance_officer", "192.0.2.1")
        assert event.details["failures"] == limit
        assert event.details["cooloff_seconds"] == cool_off
        assert event.content_hash == event.compute_content_hash()
        refused = AuditEvent.objects.filter(
            action="auth.login_failed", actor_name="compliance_officer"
        )
        assert refused.count() == limit + 2
        assert not AuditEvent.objects.filter(action="auth.login", actor_name="compliance_officer")

    def test_one_address_is_locked_whatever_usernames_it_tries(self, auditor, limit):
        for n in range(limit - 1):
            assert sign_in(f"guess-{n}", "wrong", "192.0.2.2").status_code == 200
        assert sign_in("auditor", "wrong", "192.0.2.2").status_code == 429

        refused = sign_in("auditor", PASSWORD, "192.0.2.2")
        assert refused.status_code == 429 and not signed_in(refused)
        (event,) = AuditEvent.objects.filter(action="auth.locked_out")
        assert event.ip == "192.0.2.2"
        # The username itself had one failure: from another address it signs in.
        assert signed_in(sign_in("auditor", PASSWORD, "198.51.100.9"))

    def test_a_forged_x_forwarded_for_does_not_escape_the_address_lock(self, auditor, limit):
        for n in range(limit):
            Client().post(
                LOGIN,
                {"username": f"guess-{n}", "password": "wrong"},
                REMOTE_ADDR="192.0.2.3",
                HTTP_X_FORWARDED_FOR=f"203.0.113.{n}",
            )
        refused = Client().post(
            LOGIN,
            {"username": "auditor", "password": PASSWORD},
            REMOTE_ADDR="192.0.2.3",
            HTTP_X_FORWARDED_FOR="203.0.113.200",
        )
        assert refused.status_code == 429

    def test_the_lock_ends_after_the_cool_off(self, settings, auditor, limit):
        settings.AXES_COOLOFF_TIME = timedelta(seconds=2)
        for _ in range(limit):
            sign_in("auditor", "wrong", "192.0.2.4")
        locked_at = time.monotonic()
        refused = sign_in("auditor", PASSWORD, "192.0.2.4")
        assert refused.status_code == 429
        assert refused["Retry-After"] == "2"

        # Attempts refused while locked do not extend the lock.
        wait_until(lambda: signed_in(sign_in("auditor", PASSWORD, "192.0.2.4")), timeout=15)
        assert time.monotonic() - locked_at >= 1.5

    def test_the_admin_sign_in_is_locked_the_same_way(self, admin, limit):
        for _ in range(limit):
            response = sign_in("admin", "wrong", "192.0.2.5", url=ADMIN_LOGIN)
        assert response.status_code == 429

        refused = sign_in("admin", PASSWORD, "192.0.2.5", url=ADMIN_LOGIN)
        assert refused.status_code == 429 and not signed_in(refused)
        # One lock for the username, whichever sign-in page is used.
        assert sign_in("admin", PASSWORD, "198.51.100.10").status_code == 429
        (event,) = AuditEvent.objects.filter(action="auth.locked_out")
        assert (event.actor_name, event.details["path"]) == ("admin", ADMIN_LOGIN)


def api_rates(settings, **rates):
    settings.REST_FRAMEWORK = {
        **django_settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"token": "1000/hour", "address": "1000/hour", **rates},
    }


def assert_throttled(response, max_wait: int):
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= max_wait
    error = response.json()["error"]
    assert error["code"] == "throttled"
    assert f"{response['Retry-After']} second" in error["message"]


class TestApiRates:
    """Hourly windows in these tests: a window boundary falling mid-test is unlikely."""

    def test_a_token_over_its_rate_gets_429_with_retry_after(
        self, settings, token_client, compliance_officer
    ):
        api_rates(settings, token="3/hour")
        client, _ = token_client(compliance_officer, ["read"])
        for _ in range(3):
            assert client.get(DECISIONS).status_code == 200

        assert_throttled(client.get(DECISIONS), max_wait=3600)
        other, _ = token_client(compliance_officer, ["read"])
        assert other.get(DECISIONS).status_code == 200  # the limit is per token

    def test_a_signed_in_user_is_limited_like_a_token(self, settings, compliance_officer):
        api_rates(settings, token="2/hour")
        client = APIClient()
        client.force_login(compliance_officer)
        assert [client.get(DECISIONS).status_code for _ in range(2)] == [200, 200]
        assert_throttled(client.get(DECISIONS), max_wait=3600)

    def test_one_address_over_its_rate_gets_429_whoever_it_authenticates_as(
        self, settings, token_client, compliance_officer, auditor
    ):
        api_rates(settings, address="4/hour")
        first, _ = token_client(compliance_officer, ["read"])
        second, _ = token_client(auditor, ["read"])
        for client in (first, second, first, second):
            assert client.get(DECISIONS, REMOTE_ADDR="192.0.2.20").status_code == 200

        assert_throttled(second.get(DECISIONS, REMOTE_ADDR="192.0.2.20"), max_wait=3600)
        assert first.get(DECISIONS, REMOTE_ADDR="192.0.2.21").status_code == 200

    def test_behind_a_proxy_the_client_is_the_address_the_proxy_saw(
        self, settings, token_client, compliance_officer
    ):
        settings.ATTEST_PROXY_COUNT = 1
        api_rates(settings, address="1/hour")
        client, _ = token_client(compliance_officer, ["read"])

        def get(client_address: str):
            return client.get(
                DECISIONS,
                REMOTE_ADDR="10.0.0.2",  # the proxy
                HTTP_X_FORWARDED_FOR=f"203.0.113.99, {client_address}",
            )

        assert get("192.0.2.30").status_code == 200
        assert get("192.0.2.31").status_code == 200  # another client behind the same proxy
        assert get("192.0.2.30").status_code == 429

    def test_the_defaults_are_far_above_what_a_client_sends(self, token_client, compliance_officer):
        client, _ = token_client(compliance_officer, ["read"])
        assert all(client.get(DECISIONS).status_code == 200 for _ in range(30))


class TestBadTokens:
    def test_bad_tokens_from_one_address_get_429_then_even_a_good_one_does(
        self, settings, token_client, compliance_officer
    ):
        settings.ATTEST_TOKEN_FAILURE_LIMIT = 5
        settings.ATTEST_TOKEN_FAILURE_WINDOW = 3600
        guesser = APIClient(REMOTE_ADDR="192.0.2.40")
        for n in range(5):
            guesser.credentials(HTTP_AUTHORIZATION=f"Token att_guess{n}")
            assert guesser.get(DECISIONS).status_code == 401

        guesser.credentials(HTTP_AUTHORIZATION="Token att_guess5")
        assert_throttled(guesser.get(DECISIONS), max_wait=3600)
        good, _ = token_client(compliance_officer, ["read"])
        assert_throttled(good.get(DECISIONS, REMOTE_ADDR="192.0.2.40"), max_wait=3600)
        assert good.get(DECISIONS, REMOTE_ADDR="192.0.2.41").status_code == 200

        (event,) = AuditEvent.objects.filter(action="auth.token_locked_out")
        assert event.ip == "192.0.2.40"
        assert event.details == {"failures": 5, "window_seconds": 3600, "blocked_seconds": 3600}

    def test_with_the_defaults_fifty_bad_tokens_are_not_all_answered(self):
        guesser = APIClient(REMOTE_ADDR="192.0.2.42")
        statuses = []
        for n in range(50):
            guesser.credentials(HTTP_AUTHORIZATION=f"Token att_guess{n}")
            statuses.append(guesser.get(DECISIONS).status_code)
        limit = django_settings.ATTEST_TOKEN_FAILURE_LIMIT
        assert statuses == [401] * limit + [429] * (50 - limit)

    def test_requests_without_a_token_are_not_counted_as_failures(self, settings):
        settings.ATTEST_TOKEN_FAILURE_LIMIT = 2
        anonymous = APIClient(REMOTE_ADDR="192.0.2.43")
        assert [anonymous.get(DECISIONS).status_code for _ in range(4)] == [401] * 4
