"""Two-factor authentication (TOTP, django-otp) for the roles that must use it.

The codes are computed here by pyotp (RFC 6238), from the secret the enrolment page
shows, never by django-otp.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pyotp
import pytest
from django.core.management import call_command
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from auditapp.accounts import roles
from auditapp.accounts.event_sentences import describe
from auditapp.accounts.models import AuditEvent
from tests.accounts.test_sso import provider, sign_in  # noqa: F401  (a real IdP)
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def required(settings):
    settings.ATTEST_REQUIRE_2FA = True


def log_in(username: str) -> Client:
    client = Client()
    response = client.post("/accounts/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


def enroll(client: Client) -> pyotp.TOTP:
    """Read the secret off the enrolment page and confirm it with the code it gives now."""
    page = client.get("/accounts/two-factor/")
    assert page.status_code == 200
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.content.decode()).group(1)
    totp = pyotp.TOTP(secret)
    confirmed = client.post("/accounts/two-factor/", {"code": totp.now(), "next": "/"})
    assert confirmed.status_code == 302, confirmed.content
    return totp


def next_code(totp: pyotp.TOTP) -> str:
    """A code of the next time step: the one just used is not good twice."""
    return totp.at(time.time() + totp.interval)


def actions(user) -> list[str]:
    return list(
        AuditEvent.objects.filter(actor=user, action__startswith="two_factor.")
        .order_by("id")
        .values_list("action", flat=True)
    )


@pytest.mark.parametrize("role", sorted(roles.TWO_FACTOR_ROLES))
def test_until_enrolled_the_roles_that_must_reach_only_enrolment(role, users):
    client = log_in(role)

    for path in ("/", "/audit/", "/models/", "/admin/"):
        first = client.get(path)
        assert first.status_code == 302
        assert first["Location"].startswith("/accounts/two-factor/verify?next=")
        assert client.get(first["Location"])["Location"].startswith("/accounts/two-factor/?next=")
    # The API answers their session 403, not data, and the log says so.
    refused = client.get("/api/v1/models")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    denied = AuditEvent.objects.filter(action="access.denied").latest("id")
    assert (denied.actor_name, denied.details["path"]) == (role, "/api/v1/models")


def test_enrolment_shows_a_qr_code_and_a_good_code_confirms_it(admin):
    client = log_in("admin")
    page = client.get("/accounts/two-factor/")
    body = page.content.decode()
    assert "<svg" in body and "otpauth://totp/Attest%3Aadmin?secret=" in body
    assert "unsafe-inline" not in page["Content-Security-Policy"]
    assert "<script" not in body.split("</head>")[1]  # nothing inline in the page

    enroll(client)

    assert client.get("/").status_code == 200
    assert client.get("/audit/").status_code == 200
    assert TOTPDevice.objects.get(user=admin).confirmed
    assert actions(admin) == ["two_factor.enrolled"]
    event = AuditEvent.objects.get(action="two_factor.enrolled")
    assert describe(event).text() == "admin enrolled a TOTP device for two-factor sign-in"


def test_each_sign_in_asks_for_a_code_after_the_password(compliance_officer):
    totp = enroll(log_in("compliance_officer"))

    client = log_in("compliance_officer")
    assert client.get("/audit/")["Location"] == "/accounts/two-factor/verify?next=%2Faudit%2F"
    verified = client.post(
        "/accounts/two-factor/verify", {"code": next_code(totp), "next": "/audit/"}
    )

    assert verified["Location"] == "/audit/"
    assert client.get("/audit/").status_code == 200
    assert actions(compliance_officer) == ["two_factor.enrolled", "two_factor.verified"]


def test_a_wrong_code_is_refused_and_the_next_try_must_wait(admin):
    totp = enroll(log_in("admin"))
    client = log_in("admin")
    good = next_code(totp)
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"

    refused = client.post("/accounts/two-factor/verify", {"code": wrong})
    assert refused.status_code == 400
    assert b"That code is not right. Wait 1 second before the next try." in refused.content
    # Straight after, even the good code is not checked (django-otp's throttling).
    throttled = client.post("/accounts/two-factor/verify", {"code": good})
    assert throttled.status_code == 429
    assert b"Too many wrong codes" in throttled.content
    assert client.get("/").status_code == 302

    failures = AuditEvent.objects.filter(action="two_factor.failed").order_by("id")
    assert [e.details["throttled"] for e in failures] == [False, True]
    assert (
        describe(failures[0]).text() == "admin gave a wrong two-factor code, 1 wrong code in a row"
    )
    assert describe(failures[1]).text() == (
        "admin gave a wrong two-factor code (too soon after the last wrong one: not checked)"
    )
    # Once the wait is over (moved back rather than slept), the good code is taken.
    device = TOTPDevice.objects.get(user=admin)
    device.throttling_failure_timestamp -= timedelta(seconds=5)
    device.save(update_fields=["throttling_failure_timestamp"])
    assert client.post("/accounts/two-factor/verify", {"code": good}).status_code == 302
    assert client.get("/").status_code == 200


def test_a_code_is_good_once(admin):
    totp = enroll(log_in("admin"))
    code = next_code(totp)
    first = log_in("admin")
    assert first.post("/accounts/two-factor/verify", {"code": code}).status_code == 302
    second = log_in("admin")
    assert second.post("/accounts/two-factor/verify", {"code": code}).status_code == 400


@pytest.mark.parametrize("role", sorted(set(roles.ROLES) - roles.TWO_FACTOR_ROLES))
def test_the_other_roles_are_not_asked(role, users):
    client = log_in(role)
    assert client.get("/").status_code == 200
    assert client.get("/accounts/two-factor/").status_code == 404


def test_nobody_is_asked_when_the_setting_is_off(settings, admin):
    settings.ATTEST_REQUIRE_2FA = False
    assert log_in("admin").get("/audit/").status_code == 200


def test_api_tokens_are_not_asked(admin, token_client):
    client, _ = token_client(admin, ["read"])
    assert client.get("/api/v1/models").status_code == 200


def test_an_administrator_resets_a_lost_device(admin, capsys):
    enrolled = log_in("admin")
    enroll(enrolled)
    assert enrolled.get("/").status_code == 200

    call_command("reset_two_factor", "admin")

    assert "Removed 1 two-factor device(s) of admin" in capsys.readouterr().out
    assert not TOTPDevice.objects.filter(user=admin).exists()
    # The session verified by the removed device is no longer verified: enrol again.
    assert enrolled.get("/")["Location"].startswith("/accounts/two-factor/verify")
    reset = AuditEvent.objects.get(action="two_factor.reset")
    assert reset.actor_name == "system (manage.py)"
    assert (
        describe(reset).text().startswith("system (manage.py) reset the two-factor devices of user")
    )


def test_single_sign_on_is_the_first_factor_only(provider):  # noqa: F811
    provider.sign_in("sub-2fa", "alice", ["risk-admins"])
    client = Client()

    assert sign_in(client, "/audit/") == "/audit/"

    assert client.get("/audit/")["Location"] == "/accounts/two-factor/verify?next=%2Faudit%2F"
    totp = enroll(client)
    assert client.get("/audit/").status_code == 200
    client.post("/accounts/logout/")
    sign_in(client)
    assert client.get("/audit/").status_code == 302  # a code again, at every sign-in
    assert client.post("/accounts/two-factor/verify", {"code": next_code(totp)}).status_code == 302
    assert client.get("/audit/").status_code == 200


def test_the_admin_shows_devices_without_their_secret(admin):
    enrolled = log_in("admin")
    enroll(enrolled)
    device = TOTPDevice.objects.get(user=admin)
    listing = enrolled.get("/admin/otp_totp/totpdevice/")
    assert listing.status_code == 200
    page = enrolled.get(f"/admin/otp_totp/totpdevice/{device.pk}/change/")
    assert page.status_code == 200
    assert device.key not in page.content.decode()
    assert enrolled.post(f"/admin/otp_totp/totpdevice/{device.pk}/delete/").status_code == 403
