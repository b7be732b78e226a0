"""A top_reason search reads its page from the reasons' index in the page's order
(dossier.filters.ReasonFilter): the first matches of each place beyond the cursor, more
when the other filters leave too few, every match at last. Whichever way a page is read,
every page of every search answers exactly the decisions the filters name, in order."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from auditapp.decisions.models import Decision
from explain.models import TopReasons
from tests.conftest import embedded_default
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 1, tzinfo=UTC)
DECISIONS = 90
FILLER = ("age", "debt_ratio", "loan_amount")  # never searched for below


def place_of(n: int) -> str | None:
    """Where each decision ranks the searched features: `sex` in 1 in 15 (rare), `income`
    in 4 of 5 (common), in the three places in turn."""
    if n % 15 == 7:
        return "sex"
    if n % 5:
        return "income"
    return None


@pytest.fixture
def reasons(model_version, ingest) -> list[Decision]:
    """DECISIONS decisions, three at each moment (ties of the page's time order), each
    with its top three reasons written as the store writes them."""
    payloads = DecisionPayloadFactory.build_batch(DECISIONS)
    for n, payload in enumerate(payloads):
        payload["predicted_at"] = (START + timedelta(hours=n // 3)).isoformat()
        payload["score"] = n * 37 % 100 / 100  # 0.99 once (n = 27, income)
        payload["prediction"] = "bad" if payload["score"] >= 0.5 else "good"
    ingest(*payloads)
    decisions = list(Decision.objects.order_by("id"))
    rows = []
    for n, decision in enumerate(decisions):
        places = list(FILLER)
        if (searched := place_of(n)) is not None:
            places[n % 3] = searched
        rows.append(
            TopReasons(
                decision=decision,
                predicted_at=decision.predicted_at,
                **dict(zip(TopReasons.PLACES, places, strict=True)),
            )
        )
    TopReasons.objects.bulk_create(rows)
    return decisions


def expected(decisions, reason: str, *, ordering: str, score_min=None, start=None) -> list[int]:
    kept = [
        d
        for n, d in enumerate(decisions)
        if place_of(n) == reason
        and (score_min is None or d.score >= score_min)
        and (start is None or d.predicted_at >= start)
    ]
    if ordering.endswith("score"):
        kept.sort(key=lambda d: (d.score, d.pk), reverse=ordering.startswith("-"))
    else:
        kept.sort(key=lambda d: (d.predicted_at, d.pk), reverse=ordering.startswith("-"))
    return [d.pk for d in kept]


def every_page(client, **params) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/v1/decisions", query)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([row["id"] for row in body["results"]])
        if not (cursor := body["next"]):
            return pages


SEARCHES = list(
    itertools.product(
        ("sex", "income"),
        ("-predicted_at", "predicted_at", "-score"),
        (None, 0.5),  # 0.5: half the matches are left out, some of the first ones
        (2, 5),
    )
)


@pytest.mark.parametrize(("reason", "ordering", "score_min", "limit"), SEARCHES)
def test_every_page_holds_the_decisions_the_filters_name_in_order(
    reasons, api_client, compliance_officer, reason, ordering, score_min, limit
):
    client = api_client(compliance_officer)
    params = {"top_reason": reason, "ordering": ordering, "limit": limit, "model": "credit"}
    if score_min is not None:
        params["score_min"] = score_min
    pages = every_page(client, **params)
    want = expected(reasons, reason, ordering=ordering, score_min=score_min)
    assert want, "the search must find something to test"
    assert [pk for page in pages for pk in page] == want
    assert all(len(page) == limit for page in pages[:-1])


def test_the_period_narrows_the_first_matches_too(reasons, api_client, compliance_officer):
    start = START + timedelta(hours=10)
    pages = every_page(
        api_client(compliance_officer), top_reason="sex", limit=2, **{"from": start.isoformat()}
    )
    assert [pk for page in pages for pk in page] == expected(
        reasons, "sex", ordering="-predicted_at", start=start
    )


FIRST_MATCHES = 'SELECT "explain_topreasons"'


def reads_of_the_reasons(client, **params) -> list[str]:
    """The statements of one search that read the reasons: "first N" for a read of the
    first N matches of a place, "every" for a page among every match."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/decisions", {"model": "credit", **params})
    assert response.status_code == 200, response.content
    reads = []
    for sql in (q["sql"] for q in queries.captured_queries):
        if sql.startswith(FIRST_MATCHES):
            reads.append(f"first {sql.rsplit('LIMIT ', 1)[1]}")
        elif "explain_topreasons" in sql:
            reads.append("every")
    return reads


def test_a_page_in_time_order_reads_the_first_matches_of_each_place_only(
    reasons, api_client, compliance_officer
):
    client = api_client(compliance_officer)
    # 4 a row of the page (2 + 1), in each of the three places.
    assert reads_of_the_reasons(client, top_reason="sex", limit=2) == ["first 12"] * 3
    # Too few of the first matches pass the other filters: more, then every match.
    assert reads_of_the_reasons(client, top_reason="income", score_min=0.99, limit=2) == [
        *["first 12"] * 3,
        *["first 48"] * 3,
        "every",
    ]
    # Another order than time's reads every match at once.
    assert reads_of_the_reasons(client, top_reason="sex", ordering="score") == ["every"]


@pytest.mark.skipif(embedded_default(), reason="PostgreSQL's plans")
def test_the_first_matches_are_read_from_the_index_in_the_pages_order(
    reasons, api_client, compliance_officer
):
    client = api_client(compliance_officer)
    with CaptureQueriesContext(connection) as queries:
        client.get("/api/v1/decisions", {"top_reason": "sex", "limit": 2})
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(FIRST_MATCHES)]
    with connection.cursor() as cursor:
        # A table this small is read whole and sorted otherwise. With sorting discouraged,
        # a plan without a Sort is one whose index gives the page's order.
        cursor.execute("SET enable_seqscan = off; SET enable_sort = off")
        for place, sql in zip(TopReasons.PLACES, reads, strict=True):
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert f"reasons_{place}_time" in plan and "Sort" not in plan, plan
        cursor.execute("RESET enable_seqscan; RESET enable_sort")
