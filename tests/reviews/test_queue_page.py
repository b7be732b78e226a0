"""The queue page: cases by priority with their score, rules, assignee and age; taking several."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.accounts.services import create_user
from auditapp.decisions.models import Decision
from auditapp.registry.services import assign_models
from auditapp.reviews import rules
from auditapp.reviews.models import CaseEvent, ReviewCase
from auditapp.reviews.services import open_cases, resolve_case, take_case
from auditapp.reviews.views import age_text
from tests.conftest import PASSWORD
from tests.factories import MODEL_NAME, DecisionPayloadFactory


@pytest.fixture
def scored(model_version, ingest) -> dict[str, Decision]:
    """Decisions by name, with the scores the priority is about (two without a score)."""
    scores = {"a": 0.48, "b": 0.51, "c": 0.06, "d": 0.30, "e": 0.75, "f": None, "g": None}
    payloads = []
    for score in scores.values():
        prediction = "bad" if score is not None and score >= 0.5 else "good"
        payloads.append(DecisionPayloadFactory(score=score, prediction=prediction))
    ids = [r["id"] for r in ingest(*payloads)]
    return dict(zip(scores, Decision.objects.filter(pk__in=ids).order_by("pk"), strict=True))


def open_case(decision: Decision, rule: str, *, age: timedelta) -> ReviewCase:
    (case,) = open_cases({decision.pk: [rules.reason(rule, "test")]})
    ReviewCase.objects.filter(pk=case.pk).update(opened_at=timezone.now() - age)
    return ReviewCase.objects.get(pk=case.pk)


@pytest.fixture
def cases(scored) -> dict[str, ReviewCase]:
    hour = timedelta(hours=1)
    return {
        "a": open_case(scored["a"], rules.SCORE_NEAR_THRESHOLD, age=50 * hour),
        "b": open_case(scored["b"], rules.SCORE_NEAR_THRESHOLD, age=hour),
        "c": open_case(scored["c"], rules.FLAGGED, age=3 * hour),
        "d": open_case(scored["d"], rules.EXPERT_DISAGREES, age=2 * hour),
        "e": open_case(scored["e"], rules.SCORE_MISMATCH, age=hour),
        "f": open_case(scored["f"], rules.FLAGGED, age=4 * hour),
        "g": open_case(scored["g"], rules.FLAGGED, age=5 * hour),
    }


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def names(cases: dict[str, ReviewCase], shown) -> str:
    by_pk = {case.pk: name for name, case in cases.items()}
    return "".join(by_pk[case.pk] for case in shown)


def test_the_queue_orders_by_rule_severity_then_score_distance_then_age(domain_expert, cases):
    page = browser(domain_expert).get("/review/")
    # e: the score is not the model's; d: an expert disagreed; then three flagged by
    # hand: c (score 0.06, 0.44 from the threshold), then g and f without a score,
    # g the older; last the score band, b (0.01 from 0.5) before a (0.02).
    assert names(cases, page.context["cases"]) == "edcgfba"
    assert [c.severity for c in page.context["cases"]] == [80, 60, 50, 50, 50, 10, 10]


def test_the_other_orders(domain_expert, cases):
    client = browser(domain_expert)
    assert names(cases, client.get("/review/?order=oldest").context["cases"]) == "agfcdbe"
    assert names(cases, client.get("/review/?order=score_high").context["cases"])[:5] == "ebadc"
    assert names(cases, client.get("/review/?order=score_low").context["cases"])[:5] == "cdabe"
    refused = client.get("/review/?order=shortest")
    assert refused.status_code == 400 and b"order must be one of" in refused.content


def test_each_row_shows_score_rules_assignee_and_age(domain_expert, cases):
    take_case(roles.Actor(user=domain_expert), cases["a"])
    html = browser(domain_expert).get("/review/").content.decode()
    row_a = html[html.index(f'data-case="{cases["a"].pk}"') :].split("</tr>")[0]
    assert '<td class="num score">0.480</td>' in row_a
    assert "score close to the decision threshold" in row_a
    assert "<td>domain_expert</td>" in row_a
    assert '<td class="num age"' in row_a and ">2 d</td>" in row_a
    row_c = html[html.index(f'data-case="{cases["c"].pk}"') :].split("</tr>")[0]
    assert "flagged by hand" in row_c and ">3 h</td>" in row_c and "<td>—</td>" in row_c
    assert '<strong class="total">7</strong> cases' in html


def test_ages_read_as_people_say_them():
    assert age_text(timedelta(minutes=40)) == "40 min"
    assert age_text(timedelta(hours=3, minutes=59)) == "3 h"
    assert age_text(timedelta(hours=47)) == "47 h"
    assert age_text(timedelta(days=2, hours=5)) == "2 d"


def test_an_expert_takes_several_cases_at_once_and_each_is_audited(domain_expert, cases):
    chosen = [cases["a"].pk, cases["c"].pk, cases["e"].pk]
    client = browser(domain_expert)
    response = client.post("/review/take", {"case": chosen, "query": "order=oldest&who=unassigned"})
    assert response.status_code == 302
    assert response["Location"] == "/review/?order=oldest&who=unassigned"
    taken = ReviewCase.objects.filter(pk__in=chosen)
    assert {(c.state, c.assignee_id) for c in taken} == {(ReviewCase.IN_REVIEW, domain_expert.pk)}
    events = CaseEvent.objects.filter(action="taken")
    assert sorted(e.case_id for e in events) == sorted(chosen)
    assert {e.actor_id for e in events} == {domain_expert.pk}
    audited = AuditEvent.objects.filter(action="review.taken")
    assert sorted(int(e.object_id) for e in audited) == sorted(chosen)
    assert {e.actor_id for e in audited} == {domain_expert.pk}
    others = ReviewCase.objects.exclude(pk__in=chosen)
    assert {c.state for c in others} == {ReviewCase.OPEN}

    page = client.get(response["Location"])
    assert [str(m) for m in page.context["messages"]] == [
        f"You took 3 cases: {', '.join(map(str, sorted(chosen)))}."
    ]


def test_taking_several_is_all_or_nothing_and_names_the_cases_refused(
    domain_expert, model_version, cases
):
    colleague = create_user("colleague", roles.DOMAIN_EXPERT, password=PASSWORD)
    assign_models(colleague, [MODEL_NAME])
    take_case(roles.Actor(user=colleague), cases["b"])
    expert = roles.Actor(user=domain_expert)
    resolve_case(expert, cases["d"], ReviewCase.CONFIRMED)
    before = (CaseEvent.objects.count(), AuditEvent.objects.filter(action="review.taken").count())
    missing = max(c.pk for c in cases.values()) + 100

    chosen = [cases["a"].pk, cases["b"].pk, cases["d"].pk, missing]
    response = browser(domain_expert).post("/review/take", {"case": chosen, "query": "show=all"})

    assert response.status_code == 409
    html = response.content.decode()
    assert f"case {cases['b'].pk} is in review by colleague" in html
    assert f"case {cases['d'].pk} is already resolved" in html
    assert f"case {missing} is not in your queue" in html
    assert f"case {cases['a'].pk} " not in html.split("<form")[0]  # a could be taken
    assert response.context["pager"].total == 7  # the queue as it was asked for (show=all)
    assert ReviewCase.objects.get(pk=cases["a"].pk).state == ReviewCase.OPEN
    assert ReviewCase.objects.get(pk=cases["b"].pk).assignee == colleague
    after = (CaseEvent.objects.count(), AuditEvent.objects.filter(action="review.taken").count())
    assert after == before


def test_taking_nothing_or_not_a_case_is_refused(domain_expert, cases):
    client = browser(domain_expert)
    assert client.post("/review/take", {"query": ""}).status_code == 400
    response = client.post("/review/take", {"case": [str(cases["a"].pk), "1; drop"]})
    assert response.status_code == 400 and b"Case ids must be whole numbers" in response.content
    assert ReviewCase.objects.get(pk=cases["a"].pk).state == ReviewCase.OPEN


@pytest.mark.parametrize("who", ["auditor", "compliance_officer", "ml_engineer"])
def test_a_role_that_may_not_work_reviews_is_refused_and_nothing_changes(who, users, cases):
    page = browser(users[who]).get("/review/")
    assert page.status_code == 200 and b"Take selected" not in page.content
    response = browser(users[who]).post("/review/take", {"case": [cases["a"].pk]})
    assert response.status_code == 403
    assert set(ReviewCase.objects.values_list("state", flat=True)) == {ReviewCase.OPEN}
    assert not CaseEvent.objects.filter(action="taken").exists()
