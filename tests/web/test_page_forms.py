"""A page's form that gives a field twice is refused naming it, and nothing is stored: Django
answers a repeated field's last value, where the sender (or whoever built the body) may mean
the first. The API's parsers refuse it the same way (auditapp/web/parsers.py); a field that
takes several values (the queue's ticked cases) says so (pages.takes_lists)."""

from __future__ import annotations

import pytest
from django.test import Client

from auditapp.reviews.models import Feedback, ReviewCase
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def decision_id(model_version, ingest) -> int:
    (result,) = ingest(DecisionPayloadFactory(score=0.2, prediction="good"))
    return result["id"]


def post(client, path: str, body: str):
    return client.post(path, body, content_type="application/x-www-form-urlencoded")


def test_feedback_with_a_verdict_given_twice_is_refused_and_not_stored(domain_expert, decision_id):
    response = post(
        browser(domain_expert),
        f"/decisions/{decision_id}/feedback",
        "verdict=agree&verdict=disagree&comment=",
    )
    assert response.status_code == 400, response.content
    text = response.content.decode()
    assert "verdict" in text and "given more than once" in text
    assert not Feedback.objects.exists()


def test_a_flag_with_its_note_given_twice_is_refused_and_opens_no_case(domain_expert, decision_id):
    response = post(browser(domain_expert), f"/decisions/{decision_id}/flag", "note=a&note=b")
    assert response.status_code == 400, response.content
    assert "note" in response.content.decode()
    assert not ReviewCase.objects.exists()


def test_the_queue_takes_several_ticked_cases_but_one_query(domain_expert, decision_id):
    client = browser(domain_expert)
    assert post(client, f"/decisions/{decision_id}/flag", "note=look").status_code == 302
    (case,) = ReviewCase.objects.all()
    twice = post(client, "/review/take", f"case={case.pk}&query=&query=show%3Dall")
    assert twice.status_code == 400 and "query" in twice.content.decode()
    assert ReviewCase.objects.get().assignee_id is None
    taken = post(client, "/review/take", f"case={case.pk}&case={case.pk}&query=")
    assert taken.status_code == 302
    assert ReviewCase.objects.get().assignee_id == domain_expert.pk
