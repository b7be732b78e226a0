"""Feedback on a decision: API and page; assigned domain experts and admins only; append-only."""

from __future__ import annotations

import pytest
from django.test import Client

from auditapp.accounts.models import AuditEvent
from auditapp.appendonly import AppendOnlyError
from auditapp.reviews.models import Feedback


def url(decision) -> str:
    return f"/api/v1/decisions/{decision.pk}/feedback"


GOOD = {
    "verdict": "disagree",
    "corrected_label": "bad",
    "explanation_rating": 2,
    "comment": "Income is verified; the debt ratio is what matters here.",
}


def test_an_assigned_domain_expert_gives_feedback(api_client, domain_expert, decision):
    response = api_client(domain_expert).post(url(decision), GOOD, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["verdict"], body["corrected_label"], body["explanation_rating"]) == (
        "disagree",
        "bad",
        2,
    )
    feedback = Feedback.objects.get()
    assert feedback.author == domain_expert and feedback.comment == GOOD["comment"]
    event = AuditEvent.objects.get(action="feedback.submitted")
    assert event.object_id == str(decision.pk)


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("admin", 201),
        ("domain_expert", 201),
        ("outsider", 404),
        ("compliance_officer", 403),
        ("auditor", 403),
        ("ml_engineer", 403),
        ("no_role", 403),
        ("anonymous", 401),
    ],
)
def test_only_assigned_experts_and_admins_give_feedback(api_client, users, decision, who, status):
    response = api_client(users[who]).post(url(decision), {"verdict": "agree"}, format="json")
    assert response.status_code == status
    assert Feedback.objects.count() == (1 if status == 201 else 0)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"verdict": "maybe"}, "verdict"),
        ({"verdict": "agree", "corrected_label": "ugly"}, "corrected_label"),
        ({"verdict": "agree", "explanation_rating": 6}, "explanation_rating"),
        ({"verdict": "agree", "explanation_rating": True}, "explanation_rating"),
        ({"verdict": "agree", "mood": "happy"}, "mood"),
    ],
)
def test_bad_feedback_names_the_field(api_client, domain_expert, decision, data, field):
    response = api_client(domain_expert).post(url(decision), data, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert Feedback.objects.count() == 0


def test_a_change_of_mind_is_a_new_entry_and_the_history_is_kept(
    api_client, domain_expert, compliance_officer, decision
):
    client = api_client(domain_expert)
    client.post(url(decision), {"verdict": "agree"}, format="json")
    client.post(url(decision), {"verdict": "disagree", "corrected_label": "bad"}, format="json")
    history = api_client(compliance_officer).get(f"/api/v1/decisions/{decision.pk}").json()
    assert [f["verdict"] for f in history["feedback"]] == ["disagree", "agree"]
    assert {f["author"] for f in history["feedback"]} == {"domain_expert"}
    latest = api_client(compliance_officer).get("/api/v1/decisions", {"feedback": "disagree"})
    assert [d["id"] for d in latest.json()["results"]] == [decision.pk]
    first = Feedback.objects.order_by("created_at").first()
    first.verdict = "unsure"
    with pytest.raises(AppendOnlyError):
        first.save()


def test_the_decision_page_form_records_feedback(domain_expert, decision):
    browser = Client()
    browser.force_login(domain_expert)
    page = browser.get(f"/decisions/{decision.pk}/")
    assert b"Give feedback" in page.content
    response = browser.post(
        f"/decisions/{decision.pk}/feedback",
        {
            "verdict": "disagree",
            "corrected_label": "bad",
            "explanation_rating": "4",
            "comment": "Looks off.",
        },
    )
    assert response.status_code == 302
    feedback = Feedback.objects.get()
    assert (feedback.verdict, feedback.corrected_label, feedback.explanation_rating) == (
        "disagree",
        "bad",
        4,
    )
    assert b"should be <strong>bad</strong>" in browser.get(f"/decisions/{decision.pk}/").content


def test_auditors_see_the_history_but_no_form(auditor, domain_expert, api_client, decision):
    api_client(domain_expert).post(url(decision), {"verdict": "agree"}, format="json")
    browser = Client()
    browser.force_login(auditor)
    page = browser.get(f"/decisions/{decision.pk}/").content
    assert b"Give feedback" not in page and b"domain_expert" in page
