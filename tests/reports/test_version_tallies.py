"""A version's figures (decisions per day, score histogram) come from tallies of the sealed
decisions plus the decisions after them counted as they are: the page read every decision
of the version (1.1 s at 2 million). Each figure is held to a count made here from the
decisions themselves, before, between and after seals, and across a retirement."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.decisions import retention, tallies
from auditapp.decisions.models import Decision, TallyMark, VersionDayTally
from auditapp.decisions.tasks import seal_records
from auditapp.reports.version_stats import version_statistics
from tests.decisions.test_retention import actors, three_months  # noqa: F401  (fixtures)
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db


def expected(version) -> tuple[list[tuple[str, int]], list[int]]:
    """Per day (UTC) and per score bin, counted here from the decisions, in exact decimals."""
    decisions = Decision.objects.served().filter(model_version=version)
    days = Counter(d.predicted_at.astimezone(UTC).date().isoformat() for d in decisions)
    bins = [0] * 20
    for score in decisions.exclude(score=None).values_list("score", flat=True):
        bins[min(int(Decimal(repr(score)) * 20), 19)] += 1
    return sorted(days.items()), bins


def figures(version) -> tuple[list[tuple[str, int]], list[int]]:
    stats = version_statistics(version)
    assert stats.decisions == sum(n for _, n in stats.per_day)
    return stats.per_day, stats.score_counts


def tallied() -> int:
    return sum(VersionDayTally.objects.values_list("decisions", flat=True))


def spread_over_days(count: int, first_day: int = 0) -> list[dict]:
    now = timezone.now()
    return [
        DecisionPayloadFactory(predicted_at=(now - timedelta(days=first_day + i % 4)).isoformat())
        for i in range(count)
    ]


def test_the_figures_are_the_same_counted_now_tallied_or_both(model_version, ingest):
    ingest(*spread_over_days(30))
    assert tallied() == 0
    assert figures(model_version) == expected(model_version)  # every decision counted now

    seal_records()
    assert tallied() == 30
    assert TallyMark.objects.get().through_id == Decision.objects.latest("id").pk
    assert figures(model_version) == expected(model_version)  # every decision tallied

    ingest(*spread_over_days(10, first_day=2))  # after the mark: counted now, beside
    assert tallied() == 30
    assert figures(model_version) == expected(model_version)

    seal_records()
    assert tallied() == 40
    assert figures(model_version) == expected(model_version)
    assert sum(expected(model_version)[1]) == 40


def test_the_page_reads_only_the_decisions_after_the_mark(
    model_version, ingest, compliance_officer
):
    ingest(*spread_over_days(8))
    seal_records()
    client = Client()
    client.force_login(compliance_officer)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/models/credit/versions/{model_version.version}/")
    assert response.status_code == 200
    (read,) = [q["sql"] for q in queries.captured_queries if '"score"' in q["sql"]]
    assert f'"decisions_decision"."id" > {TallyMark.objects.get().through_id}' in read, read
    assert response.context["stats"].per_day == expected(model_version)[0]


def test_a_range_is_counted_once(model_version, ingest):
    ingest(*spread_over_days(5))
    call_command("seal_records", stdout=io.StringIO())  # counts too, as the beat task does
    assert tallied() == 5
    through = TallyMark.objects.get().through_id
    assert tallies.count_through(through) == 0  # again: nothing
    assert tallies.count_through(through - 1) == 0  # behind the mark: nothing
    seal_records()
    assert tallied() == 5


def test_a_retirement_drops_the_tallies_and_the_next_seal_counts_again(
    three_months,  # noqa: F811
    model_version,
):
    target, _ = three_months  # sealed, and not counted: the sealing task counts
    assert tallied() == 0
    seal_records()
    assert tallied() == 7
    retention.retire_month(roles.system_actor(), *target)
    assert Decision.objects.count() == 4
    assert tallied() == 0 and TallyMark.objects.get().through_id == 0
    assert figures(model_version) == expected(model_version)  # all counted now

    seal_records()
    assert tallied() == 4
    assert figures(model_version) == expected(model_version)
