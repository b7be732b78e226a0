"""The overview answers "what needs me today": per model the actor may see, open alerts,
the review backlog and its age, explanations waiting or failed, today's decisions, and
the chain's last verification, each a link to where it is worked on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from auditapp.decisions.models import Decision, TallyMark, VerificationJob
from auditapp.decisions.tasks import seal_records
from auditapp.monitoring.models import Alert, AlertRule
from auditapp.reviews.models import ReviewCase
from explain.models import Explanation
from tests.conftest import embedded_default
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db


def page(user):
    client = Client()
    client.force_login(user)
    response = client.get("/")
    assert response.status_code == 200
    return response


@pytest.fixture
def busy(model_version, ingest):
    """5 decisions today, 2 yesterday; 1 open alert; 2 open cases (the oldest 3 days old);
    1 explanation failed, the other 6 SHAP rows waiting; a finished verification."""
    now = timezone.now()
    today = [DecisionPayloadFactory(predicted_at=now.isoformat()) for _ in range(5)]
    earlier = (now - timedelta(days=1, hours=1)).isoformat()
    yesterday = [DecisionPayloadFactory(predicted_at=earlier) for _ in range(2)]
    ids = [r["id"] for r in ingest(*today, *yesterday)]
    Explanation.objects.filter(decision_id=ids[0], method="shap").update(status="failed")
    rule = AlertRule.objects.first() or AlertRule.objects.create(
        name="test drift", metric="psi", comparison=">", threshold=0.2
    )
    Alert.objects.create(
        rule=rule,
        model_version=model_version,
        metric="psi",
        comparison=">",
        threshold=0.2,
        value=0.3,
        last_value=0.3,
        message="income drifted",
    )
    for decision_id, age in ((ids[1], timedelta(days=3)), (ids[2], timedelta(hours=2))):
        ReviewCase.objects.create(decision_id=decision_id, opened_at=now - age)
    VerificationJob.objects.create(
        status=VerificationJob.DONE, result={"ok": True}, finished_at=now - timedelta(hours=1)
    )
    return ids


def test_the_overview_counts_what_needs_attention_per_model(compliance_officer, busy):
    response = page(compliance_officer)
    (needs,) = response.context["overview"].models
    assert needs.name == "credit"
    assert needs.decisions_today == 5
    assert needs.open_alerts == 1
    assert needs.backlog == 2 and needs.backlog_age >= timedelta(days=3)
    waiting = Explanation.objects.filter(status__in=["pending", "running"]).count()
    assert needs.explanations_failed == 1 and needs.explanations_waiting == waiting > 0
    html = response.content.decode()
    assert "/review/?model=credit" in html and "3\xa0days" in html  # the oldest case's age
    assert f'href="/decisions/{busy[0]}/"' in html  # latest decisions link to their pages
    assert "every record and seal matches" in html


def test_a_model_the_actor_may_not_see_is_not_counted(domain_expert, busy, model_version):
    """The domain expert is assigned credit; unassigned, the overview says nothing of it."""
    model_version.registered_model.assignees.remove(domain_expert)
    response = page(domain_expert)
    assert response.context["overview"].models == []
    assert "credit" not in response.content.decode()


def test_the_overview_reads_a_few_grouped_queries_whatever_the_models(
    compliance_officer, busy, django_assert_max_num_queries
):
    client = Client()
    client.force_login(compliance_officer)
    client.get("/")
    # session, user, roles, verification, models, 5 grouped figures, latest decisions
    # with their versions
    with django_assert_max_num_queries(13):
        client.get("/")
    assert Decision.objects.count() == 7


def test_the_latest_decisions_are_the_newest_recorded(compliance_officer, busy):
    latest = [d.pk for d in page(compliance_officer).context["recent"]]
    assert latest == sorted(busy, reverse=True)


@pytest.mark.skipif(embedded_default(), reason="PostgreSQL's plans")
def test_the_latest_decisions_are_read_from_an_index_in_their_order(compliance_officer, busy):
    """They were sorted by recorded_at, which no index holds: 1.1 s at 2M decisions."""
    with CaptureQueriesContext(connection) as queries:
        page(compliance_officer)
    (latest,) = [q["sql"] for q in queries.captured_queries if q["sql"].endswith("LIMIT 10")]
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off; SET enable_sort = off")
        cursor.execute(f"EXPLAIN {latest}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan; RESET enable_sort")
    assert "Sort" not in plan, plan


def test_decisions_today_are_counted_from_the_tallies_and_the_decisions_since(
    compliance_officer, busy, ingest
):
    """It counted every decision of the day: 0.6 s at 1.7 million decisions a day."""
    seal_records()  # the seven are tallied
    assert TallyMark.objects.get().through_id == max(busy)
    now = timezone.now().isoformat()
    ingest(*[DecisionPayloadFactory(predicted_at=now) for _ in range(3)])  # after the mark

    with CaptureQueriesContext(connection) as queries:
        (needs,) = page(compliance_officer).context["overview"].models

    assert needs.decisions_today == 5 + 3
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    assert Decision.objects.filter(predicted_at__gte=today).count() == 8  # counted here
    counts = [q["sql"] for q in queries.captured_queries if '"predicted_at" >=' in q["sql"]]
    assert len(counts) == 1 and all(
        f'"decisions_decision"."id" > {max(busy)}' in sql for sql in counts
    )
