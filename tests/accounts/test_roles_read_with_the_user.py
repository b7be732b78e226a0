"""Who is signed in, and their roles, in one query; nothing kept beyond the request."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.authentication import ApiTokenAuthentication, ModelBackend
from auditapp.accounts.models import ApiToken
from auditapp.accounts.services import create_api_token

DECISIONS = "/api/v1/decisions"


def regroup(user, *names: str) -> None:
    """Give `user` exactly these roles, as an admin would between two requests."""
    user.groups.set(Group.objects.filter(name__in=names))


@pytest.mark.parametrize(
    "groups, superuser, expected",
    [
        ((roles.COMPLIANCE_OFFICER,), False, [roles.COMPLIANCE_OFFICER]),
        ((roles.AUDITOR, roles.DOMAIN_EXPERT), False, [roles.AUDITOR, roles.DOMAIN_EXPERT]),
        ((), False, []),
        ((), True, [roles.ADMIN]),
    ],
)
def test_a_signed_in_user_is_read_with_their_roles_in_one_query(
    compliance_officer, django_assert_num_queries, groups, superuser, expected
):
    regroup(compliance_officer, *groups)
    compliance_officer.is_superuser = superuser
    compliance_officer.save(update_fields=["is_superuser"])

    with django_assert_num_queries(1):
        user = ModelBackend().get_user(compliance_officer.pk)
        assert sorted(roles.role_names(user)) == sorted(expected)
    assert user == compliance_officer


def test_an_inactive_or_missing_user_is_nobody(compliance_officer):
    compliance_officer.is_active = False
    compliance_officer.save(update_fields=["is_active"])

    assert ModelBackend().get_user(compliance_officer.pk) is None
    assert ModelBackend().get_user(compliance_officer.pk + 1000) is None


def test_a_token_is_read_with_its_user_and_roles_in_one_query(
    compliance_officer, django_assert_num_queries
):
    token, key = create_api_token(compliance_officer, scopes=["read"])
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())  # used just now

    with django_assert_num_queries(1):
        user, found = ApiTokenAuthentication().authenticate_credentials(key)
        assert roles.role_names(user) == [roles.COMPLIANCE_OFFICER]
    assert (user, found) == (compliance_officer, token)


def test_a_role_changed_between_two_requests_of_a_session_counts_at_once(
    compliance_officer, decision
):
    client = Client()
    client.force_login(compliance_officer)
    (shown,) = client.get(DECISIONS).json()["results"]
    assert shown["masked_features"] == []

    regroup(compliance_officer, roles.AUDITOR)  # may not see sensitive values
    (shown,) = client.get(DECISIONS).json()["results"]
    assert shown["masked_features"] == ["income", "sex"]
    assert shown["inputs"]["income"] == "[masked]"

    regroup(compliance_officer)
    assert client.get(DECISIONS).status_code == 403


def test_a_role_changed_between_two_requests_of_a_token_counts_at_once(
    compliance_officer, decision
):
    _, key = create_api_token(compliance_officer, scopes=["read"])
    client = Client(HTTP_AUTHORIZATION=f"Token {key}")
    (shown,) = client.get(DECISIONS).json()["results"]
    assert shown["masked_features"] == []

    regroup(compliance_officer, roles.AUDITOR)
    (shown,) = client.get(DECISIONS).json()["results"]
    assert shown["masked_features"] == ["income", "sex"]

    regroup(compliance_officer)
    assert client.get(DECISIONS).status_code == 403


def test_a_session_opened_under_djangos_own_backend_stays_signed_in(compliance_officer):
    """Sessions from before Attest's backend name Django's: an upgrade signs no one out."""
    client = Client()
    client.force_login(compliance_officer, backend="django.contrib.auth.backends.ModelBackend")

    page = client.get("/decisions/")

    assert page.status_code == 200
    assert page.wsgi_request.user == compliance_officer


def test_signing_in_now_names_attests_backend(compliance_officer):
    client = Client()
    compliance_officer.set_password("a-long-pass-phrase-1")
    compliance_officer.save()

    assert client.login(username=compliance_officer.username, password="a-long-pass-phrase-1")
    assert client.session["_auth_user_backend"] == "auditapp.accounts.authentication.ModelBackend"
