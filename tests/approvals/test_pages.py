"""The approvals page and the model page: who sees what to decide, the forms, the history."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from auditapp.approvals.models import Approval, ApprovalStep
from auditapp.registry.models import ModelVersion, RegisteredModel

STAGE_URL = "/api/v1/models/credit/versions/1/stage"


@pytest.fixture
def asked(api_client, gated_version, ml_engineer) -> int:
    response = api_client(ml_engineer).post(STAGE_URL, {"stage": "production"}, format="json")
    assert response.status_code == 202
    return response.json()["approval"]["id"]


def page_as(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf(client: Client) -> str:
    html = client.get("/approvals/").content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def test_an_approver_sees_the_request_and_its_forms(asked, second_engineer):
    response = page_as(second_engineer).get("/approvals/")

    assert response.status_code == 200
    html = response.content.decode()
    assert f'action="/approvals/{asked}/approve"' in html
    assert "v1: staging → production" in html
    assert 'href="/approvals/"' in html  # in the navigation
    assert "<script>" not in html  # nothing inline (the Content-Security-Policy)


def test_the_requester_sees_it_as_their_own_without_a_form(asked, ml_engineer):
    html = page_as(ml_engineer).get("/approvals/").content.decode()

    assert f'action="/approvals/{asked}/approve"' not in html
    assert f'data-approval="{asked}"' in html  # under "Your requests"
    assert "Nothing waits for you." in html


@pytest.mark.parametrize("who", ["domain_expert", "auditor"])
def test_a_role_that_may_not_decide_has_no_form_and_posting_is_forbidden(asked, users, who):
    client = Client()
    client.force_login(users[who])

    assert f'action="/approvals/{asked}/approve"'.encode() not in client.get("/approvals/").content
    assert client.post(f"/approvals/{asked}/approve").status_code == 403
    assert not ApprovalStep.objects.exists()


def test_the_outsider_does_not_see_a_hidden_models_request(asked, outsider):
    client = Client()
    client.force_login(outsider)
    assert f'data-approval="{asked}"'.encode() not in client.get("/approvals/").content
    assert client.post(f"/approvals/{asked}/approve").status_code == 404


def test_approving_on_the_page_applies_it_and_the_model_page_names_both_people(
    asked, second_engineer, ml_engineer
):
    client = page_as(second_engineer)

    response = client.post(
        f"/approvals/{asked}/approve",
        {"comment": "checked", "csrfmiddlewaretoken": csrf(client)},
        follow=True,
    )

    assert response.status_code == 200
    assert f"Approval {asked} approved" in response.content.decode()
    assert ModelVersion.objects.get().stage == "production"
    page = page_as(ml_engineer).get("/models/credit/versions/1/").content.decode()
    row = re.findall(r'<tr class="stage-change">(.*?)</tr>', page)[-1]
    assert "production" in row and "ml_engineer" in row
    assert re.search(rf'class="approved-by">ml_engineer_2 .*#{asked}: checked', row)


def test_the_model_page_shows_the_pending_request(asked, ml_engineer):
    page = page_as(ml_engineer).get("/models/credit/versions/1/").content.decode()
    assert 'id="pending-approvals"' in page
    assert "Four-eyes approvals: <strong>on</strong>" in page


def test_a_rejection_without_a_comment_is_shown_and_changes_nothing(asked, second_engineer):
    client = page_as(second_engineer)

    response = client.post(f"/approvals/{asked}/reject", {"csrfmiddlewaretoken": csrf(client)})

    assert response.status_code == 400
    assert "A rejection needs a comment" in response.content.decode()
    assert not ApprovalStep.objects.exists()


def test_the_page_without_csrf_is_refused(asked, second_engineer):
    assert page_as(second_engineer).post(f"/approvals/{asked}/approve").status_code == 403


def test_the_requester_posting_on_the_page_is_forbidden(asked, ml_engineer):
    client = page_as(ml_engineer)
    response = client.post(f"/approvals/{asked}/approve", {"csrfmiddlewaretoken": csrf(client)})
    assert response.status_code == 403
    assert ModelVersion.objects.get().stage == "staging"


def test_the_list_page_and_api_take_a_fixed_number_of_queries(
    api_client, gated_version, ml_engineer, second_engineer, django_assert_max_num_queries
):
    requester = api_client(ml_engineer)
    for _ in range(2):  # two requests pending
        assert requester.post(STAGE_URL, {"stage": "production"}, format="json").status_code == 202
    client = page_as(second_engineer)
    approver = api_client(second_engineer)

    with django_assert_max_num_queries(12) as page_queries:
        assert client.get("/approvals/").status_code == 200
    with django_assert_max_num_queries(6) as api_queries:
        assert len(approver.get("/api/v1/approvals").json()["results"]) == 2
    many_page, many_api = len(page_queries), len(api_queries)
    for _ in range(3):
        requester.post(STAGE_URL, {"stage": "production"}, format="json")
    with django_assert_max_num_queries(many_page):
        client.get("/approvals/")
    with django_assert_max_num_queries(many_api):
        assert len(approver.get("/api/v1/approvals").json()["results"]) == 5


def test_the_four_eyes_button_asks_to_turn_it_off_and_turns_it_on_at_once(
    gated_version, ml_engineer, second_engineer, domain_expert
):
    client = page_as(ml_engineer)
    page = client.get("/models/credit/versions/1/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert "Ask to turn four-eyes off" in page

    response = client.post(
        "/models/credit/four-eyes",
        {"enabled": "off", "version": "1", "csrfmiddlewaretoken": token},
        follow=True,
    )

    assert "waits for a second person" in response.content.decode()
    assert RegisteredModel.objects.get().four_eyes is True
    approver = page_as(second_engineer)
    (approval,) = Approval.objects.all()
    approver.post(f"/approvals/{approval.pk}/approve", {"csrfmiddlewaretoken": csrf(approver)})
    assert RegisteredModel.objects.get().four_eyes is False
    on = client.post(
        "/models/credit/four-eyes",
        {"enabled": "on", "version": "1", "csrfmiddlewaretoken": token},
        follow=True,
    )
    assert "Four-eyes approvals are on." in on.content.decode()
    assert RegisteredModel.objects.get().four_eyes is True
    expert = Client()
    expert.force_login(domain_expert)
    assert b"four-eyes-form" not in expert.get("/models/credit/versions/1/").content
    assert (
        expert.post("/models/credit/four-eyes", {"enabled": "off", "version": "1"}).status_code
        == 403
    )


def test_an_unknown_action_is_not_found(asked, second_engineer):
    client = page_as(second_engineer)
    response = client.post(f"/approvals/{asked}/delete", {"csrfmiddlewaretoken": csrf(client)})
    assert response.status_code == 404
    assert not ApprovalStep.objects.exists()
