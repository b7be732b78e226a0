"""The same person's first sign-in from two browsers at once: one user, both signed in.

Both sign-ins find no identity for the provider's (issuer, subject) and create the user:
one insert wins, the other hits the unique username. It must find the winner's user, not
answer a 500. Real threads on the real database (PostgreSQL: SQLite serialises writers).
"""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from auditapp.accounts import roles
from auditapp.accounts.models import SingleSignOnIdentity
from auditapp.accounts.services import SignOn, sign_on

pytestmark = pytest.mark.django_db(transaction=True)

ATTEMPTS = 8


def claims(n: int) -> SignOn:
    return SignOn(
        issuer="https://idp.example",
        subject=f"subject-{n}",
        username=f"person-{n}",
        email=f"person-{n}@example.com",
        groups=("compliance",),
        roles=(roles.COMPLIANCE_OFFICER,),
        provider="Example IdP",
    )


def test_simultaneous_first_sign_ins_of_one_person_make_one_user(role_groups):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers: PostgreSQL")
    for n in range(3):  # three people, each signing in from ATTEMPTS places at once
        person, start = claims(n), threading.Barrier(ATTEMPTS)
        outcomes: list = []

        def attempt(person=person, start=start, outcomes=outcomes) -> None:
            start.wait()
            try:
                outcomes.append(sign_on(person))
            except Exception as exc:  # the defect: an IntegrityError, a 500
                outcomes.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=attempt) for _ in range(ATTEMPTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
        users = {user.pk for user, reason in outcomes if user is not None}
        assert len(users) == 1 and all(reason == "" for _, reason in outcomes)
        assert get_user_model().objects.filter(username=f"person-{n}").count() == 1
        assert SingleSignOnIdentity.objects.filter(subject=f"subject-{n}").count() == 1
