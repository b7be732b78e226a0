"""Single sign-on walked in a real Chromium: the button, the provider, back signed in, out.

The provider is the test's own (tests/oidc_provider.py) on 127.0.0.1, another origin than
the live server (localhost): the walk crosses origins as it does with a real IdP, under
Attest's Content-Security-Policy (the watched browser fails on any violation).
"""

from __future__ import annotations

import copy
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from auditapp.accounts.models import AuditEvent
from tests.accounts.test_sso import provider  # noqa: F401  (the provider, Attest set to use it)
from tests.web.test_browser import SHOTS, chromium  # noqa: F401  (the watched browser)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_compliance_officer_signs_in_with_the_button_and_out_again(
    live_server,
    chromium,  # noqa: F811
    provider,  # noqa: F811
    settings,
):
    # As settings.py does when ATTEST_OIDC_ISSUER is set at start-up.
    policy = copy.deepcopy(settings.CONTENT_SECURITY_POLICY)
    policy["DIRECTIVES"]["form-action"].append(provider.issuer)
    settings.CONTENT_SECURITY_POLICY = policy
    provider.sign_in("sub-b1", "carol", ["compliance"])
    page = chromium.new_page(viewport={"width": 1280, "height": 900})

    page.goto(f"{live_server.url}/audit/")  # sent to the login page first
    page.click("text=Sign in with Bank IdP")

    page.wait_for_url(f"{live_server.url}/audit/")
    expect(page.locator(".who")).to_contain_text("carol · compliance_officer")
    expect(page.locator("h1")).to_contain_text("Audit")
    page.screenshot(path=SHOTS / "sso-signed-in.png", full_page=True)
    assert AuditEvent.objects.filter(action="auth.login", actor_name="carol").exists()

    page.click("text=Log out")

    expect(page.locator("body")).to_contain_text("signed out")  # the provider's page
    (logout,) = provider.logged_out
    assert logout["post_logout_redirect_uri"] == [f"{live_server.url}/accounts/login/"]
    page.goto(f"{live_server.url}/audit/")
    assert urlsplit(page.url).path == "/accounts/login/"
    assert parse_qs(urlsplit(page.url).query) == {"next": ["/audit/"]}


def test_someone_without_a_mapped_group_reads_why_on_the_login_page(
    live_server,
    chromium,  # noqa: F811
    provider,  # noqa: F811
):
    provider.sign_in("sub-b2", "mallory", ["canteen"])
    page = chromium.new_page()

    page.goto(f"{live_server.url}/accounts/login/")
    page.click("text=Sign in with Bank IdP")

    expect(page.locator("#sso-error")).to_contain_text("is in no group that has a role in Attest")
    assert urlsplit(page.url).path == "/accounts/login/"
    page.screenshot(path=SHOTS / "sso-refused.png", full_page=True)
