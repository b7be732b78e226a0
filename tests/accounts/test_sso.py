"""Single sign-on end to end: Attest (mozilla-django-oidc, unchanged) against a real
OpenID Connect provider served by the test (tests/oidc_provider.py) over HTTP.

Each sign-in goes the whole way: Attest's start URL, the provider's authorization
endpoint, the callback, and from there Attest's own calls to the provider's token,
key and user info endpoints.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client

from auditapp.accounts import checks, roles
from auditapp.accounts.event_sentences import Context, describe
from auditapp.accounts.models import AuditEvent, SingleSignOnIdentity
from tests.conftest import PASSWORD
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider

pytestmark = pytest.mark.django_db

ROLE_MAP = {
    "risk-admins": "admin",
    "compliance": "compliance_officer",
    "ml": "ml_engineer",
    "reviewers": "domain_expert",
    "internal-audit": "auditor",
}


@pytest.fixture
def provider(settings, role_groups):
    with Provider() as started:
        settings.ATTEST_OIDC_ENABLED = True
        settings.ATTEST_OIDC_ISSUER = started.issuer
        settings.ATTEST_OIDC_CLIENT_ID = settings.OIDC_RP_CLIENT_ID = CLIENT_ID
        settings.ATTEST_OIDC_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
        settings.ATTEST_OIDC_PROVIDER_NAME = "Bank IdP"
        settings.ATTEST_OIDC_ROLE_MAP = ROLE_MAP
        yield started


def to_the_provider_and_back(client: Client, next_url: str = "/") -> tuple[str, dict]:
    """Click "Sign in with Bank IdP": Attest's start URL, then the provider's authorization
    endpoint, which signs its `person` in; returns the callback's path and query."""
    start = client.get("/accounts/sso/start/", {"next": next_url})
    assert start.status_code == 302, start
    at_provider = requests.get(start["Location"], allow_redirects=False, timeout=10)
    assert at_provider.status_code == 302, at_provider.text
    back = urlsplit(at_provider.headers["Location"])
    assert back.path == "/accounts/sso/callback/"
    return back.path, parse_qs(back.query)


def sign_in(client: Client, next_url: str = "/") -> str:
    """The whole round trip; returns where Attest's callback sends the browser."""
    callback = client.get(*to_the_provider_and_back(client, next_url))
    assert callback.status_code == 302
    return callback["Location"]


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def sentence(event: AuditEvent) -> str:
    """The audit log's sentence, users named as the audit page names them."""
    names = dict(get_user_model().objects.values_list("pk", "username"))
    said = describe(event, Context(users={str(pk): name for pk, name in names.items()}))
    assert not said.generic, said.text()
    return said.text()


def test_the_login_page_offers_the_provider_and_keeps_local_accounts(provider, client, admin):
    page = client.get("/accounts/login/")
    assert b"Sign in with Bank IdP" in page.content
    assert b'href="/accounts/sso/start/' in page.content
    assert "unsafe-inline" not in page["Content-Security-Policy"]
    signed_in = client.post("/accounts/login/", {"username": "admin", "password": PASSWORD})
    assert signed_in.status_code == 302
    assert client.get("/").status_code == 200


def test_it_signs_in_through_the_provider_with_the_role_its_groups_map_to(provider, client):
    provider.sign_in("sub-1", "carol", ["compliance", "unrelated-group"])

    assert sign_in(client, "/audit/") == "/audit/"

    carol = get_user_model().objects.get(username="carol")
    assert roles.role_names(carol) == [roles.COMPLIANCE_OFFICER]
    assert carol.email == "carol@bank.example"
    assert not carol.has_usable_password()
    identity = SingleSignOnIdentity.objects.get(user=carol)
    assert (identity.issuer, identity.subject) == (provider.issuer, "sub-1")
    # The role counts at once: a compliance officer reads the access log.
    assert client.get("/audit/").status_code == 200
    assert client.get("/").context["user"] == carol
    # Attest asked the provider itself, with the discovery document's endpoints.
    assert {"/.well-known/openid-configuration", "/token", "/jwks", "/userinfo"} <= set(
        provider.requests
    )
    (created,) = events("user.created")
    assert sentence(created) == (
        "user carol was created at their first sign-in through Bank IdP (role compliance_officer)"
    )
    (login,) = events("auth.login")
    assert login.actor == carol
    assert sentence(login) == "carol logged in through Bank IdP"


def test_a_domain_expert_signed_in_by_the_provider_gets_no_more_than_the_role(provider, client):
    provider.sign_in("sub-2", "dora", ["reviewers"])
    sign_in(client)
    assert client.get("/review/").status_code == 200
    assert client.get("/audit/").status_code == 403  # read_audit is not the role's


def test_a_person_whose_groups_map_to_no_role_is_refused_and_audited(provider, client):
    provider.sign_in("sub-3", "mallory", ["canteen", "car-park"])

    back = sign_in(client)

    assert back == "/accounts/login/?sso=no_role"
    page = client.get(back)
    assert b"is in no group that has a role in Attest" in page.content
    assert not page.context["user"].is_authenticated
    assert client.get("/").status_code == 302
    assert not get_user_model().objects.filter(username="mallory").exists()
    (refused,) = events("auth.sso_refused")
    assert refused.actor_name == "mallory"
    assert refused.details["groups"] == ["canteen", "car-park"]
    assert sentence(refused) == (
        "signing in as 'mallory' through Bank IdP was refused: none of the provider's "
        "groups (canteen and car-park) maps to an Attest role"
    )
    assert not events("auth.login") and not events("auth.login_failed")


def test_roles_follow_the_providers_groups_at_every_sign_in(provider, client):
    provider.sign_in("sub-4", "alice", ["risk-admins"])
    sign_in(client)
    alice = get_user_model().objects.get(username="alice")
    assert roles.role_names(alice) == [roles.ADMIN]
    assert alice.is_superuser and alice.is_staff  # admins run the Django admin
    client.post("/accounts/logout/")

    provider.sign_in("sub-4", "alice", ["internal-audit", "ml"])  # moved at the IdP
    sign_in(client)

    alice = get_user_model().objects.get(username="alice")
    assert sorted(roles.role_names(alice)) == [roles.AUDITOR, roles.ML_ENGINEER]
    assert not alice.is_superuser and not alice.is_staff  # else still admin (roles.py)
    changed = events("user.roles_changed")[-1]
    assert changed.details["before"] == ["admin"]
    assert changed.details["after"] == ["auditor", "ml_engineer"]
    assert sentence(changed) == (
        "the roles of user alice changed from admin to auditor and ml_engineer "
        "by their groups at Bank IdP"
    )
    assert client.get("/audit/").status_code == 200  # the auditor's


def test_losing_every_group_refuses_the_sign_in_and_ends_what_the_roles_allowed(provider):
    provider.sign_in("sub-5", "bob", ["compliance"])
    open_session = Client()
    sign_in(open_session)
    assert open_session.get("/audit/").status_code == 200

    provider.sign_in("sub-5", "bob", [])
    assert sign_in(Client()) == "/accounts/login/?sso=no_role"

    bob = get_user_model().objects.get(username="bob")
    assert roles.role_names(bob) == []
    assert events("user.roles_changed")[-1].details["after"] == []
    # Roles are read with the user at each request: the open session lost them too.
    assert open_session.get("/audit/").status_code == 403


@pytest.mark.parametrize("tamper", ["signature", "nonce", "audience", "issuer", "expired"])
def test_a_tampered_id_token_is_refused(provider, client, tamper):
    provider.sign_in("sub-6", "eve", ["risk-admins"])
    provider.tamper = tamper

    assert sign_in(client) == "/accounts/login/?sso=failed"

    assert (
        b"Signing in through Bank IdP failed" in client.get("/accounts/login/?sso=failed").content
    )
    assert client.get("/").status_code == 302
    assert not get_user_model().objects.filter(username="eve").exists()
    (failed,) = events("auth.sso_failed")
    assert sentence(failed).startswith("a sign-in through Bank IdP from 127.0.0.1 failed: ")


def test_a_code_is_not_good_twice(provider, client):
    provider.sign_in("sub-7", "frank", ["ml"])
    callback = to_the_provider_and_back(client)
    assert client.get(*callback)["Location"] == "/"
    replay = Client().get(*callback)  # another browser, the same code
    assert replay["Location"] == "/accounts/login/?sso=failed"


def test_a_provider_account_named_like_a_local_one_does_not_take_it_over(provider, client, admin):
    provider.sign_in("sub-8", "admin", ["internal-audit"])

    assert sign_in(client) == "/accounts/login/?sso=name_taken"

    assert not SingleSignOnIdentity.objects.exists()
    admin.refresh_from_db()
    assert roles.role_names(admin) == [roles.ADMIN]
    assert events("auth.sso_refused")[0].details["reason"] == "name_taken"


def test_an_account_disabled_in_attest_is_refused(provider, client):
    provider.sign_in("sub-9", "gina", ["ml"])
    sign_in(Client())
    get_user_model().objects.filter(username="gina").update(is_active=False)

    assert sign_in(client) == "/accounts/login/?sso=inactive"
    assert events("auth.sso_refused")[0].details["reason"] == "inactive"


def test_logging_out_ends_the_session_here_and_at_the_provider(provider, client):
    provider.sign_in("sub-10", "hal", ["ml"])
    sign_in(client)

    out = client.post("/accounts/logout/")

    assert out.status_code == 302
    end_session = urlsplit(out["Location"])
    assert f"http://{end_session.netloc}" == provider.issuer
    assert end_session.path == "/logout"
    query = parse_qs(end_session.query)
    assert query["post_logout_redirect_uri"] == ["http://testserver/accounts/login/"]
    assert query["id_token_hint"]
    assert client.get("/").status_code == 302
    assert events("auth.logout")


def test_single_sign_on_is_off_without_the_provider(client, admin):
    page = client.get("/accounts/login/")
    assert b"Sign in with" not in page.content
    assert client.get("/accounts/sso/start/").status_code == 404
    assert client.get("/accounts/sso/callback/", {"code": "x", "state": "y"}).status_code == 404


def test_an_unreachable_provider_is_said_so_on_the_login_page(provider, client, settings):
    settings.ATTEST_OIDC_ISSUER = "http://127.0.0.1:9"  # nothing listens on the discard port
    start = client.get("/accounts/sso/start/")
    assert start["Location"] == "/accounts/login/?sso=unavailable"
    assert b"cannot be reached just now" in client.get(start["Location"]).content


def test_the_role_map_must_name_roles(settings):
    settings.ATTEST_OIDC_ROLE_MAP = {"risk-admins": "admin", "ops": "superhero"}
    (error,) = checks.role_map_names_roles(None)
    assert error.id == "attest.E001"
    assert "superhero" in error.msg


def test_failed_sign_ins_count_towards_the_address_lockout(provider, client, settings):
    settings.AXES_FAILURE_LIMIT = 2
    provider.sign_in("sub-11", "ivan", ["ml"])
    provider.tamper = "signature"
    assert sign_in(client) == "/accounts/login/?sso=failed"

    locked = client.get(*to_the_provider_and_back(client))

    assert locked.status_code == 429  # django-axes' lockout page, as for passwords
    assert b"Sign-in paused" in locked.content
    provider.tamper = None  # even a good sign-in from the address waits out the lock
    assert client.get(*to_the_provider_and_back(client)).status_code == 429
    assert not get_user_model().objects.filter(username="ivan").exists()
    assert events("auth.locked_out")
