"""GET /api/v1/decisions: filters, keyset pagination, errors, and a pinned query count."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from tests.factories import DecisionPayloadFactory

URL = "/api/v1/decisions"


@pytest.fixture
def base_time():
    return (timezone.now() - timedelta(days=10)).replace(microsecond=0)


@pytest.fixture
def decisions(model_version, register, ml_engineer, ingest, base_time):
    """23 decisions: credit v1 (12), credit v2 (6), credit-eu v1 (5); pairs share a timestamp."""
    register(ml_engineer, version="2")
    register(ml_engineer, name="credit-eu", version="1")
    batches = [("credit", "1", 12), ("credit", "2", 6), ("credit-eu", "1", 5)]
    n = 0
    for model, version, count in batches:
        items = []
        for _ in range(count):
            moment = base_time + timedelta(hours=n // 2)
            items.append(
                DecisionPayloadFactory(
                    model=model, version=version, predicted_at=moment.isoformat()
                )
            )
            n += 1
        ingest(*items)
    return Decision.objects.all()


@pytest.fixture
def officer_client(api_client, compliance_officer):
    return api_client(compliance_officer)


def ids_in_order(queryset, *ordering) -> list[int]:
    return list(queryset.order_by(*ordering).values_list("id", flat=True))


def walk(client, **params) -> tuple[list[int], list[int]]:
    """Follow `next` from the first page to the last; the ids seen and each page's size."""
    seen, sizes, cursor = [], [], None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get(URL, query)
        assert response.status_code == 200, response.content
        body = response.json()
        seen += [d["id"] for d in body["results"]]
        sizes.append(len(body["results"]))
        cursor = body["next"]
        if cursor is None:
            return seen, sizes
    raise AssertionError("pagination did not end")


class TestPagination:
    def test_following_next_visits_every_decision_once_newest_first(
        self, officer_client, decisions
    ):
        seen, sizes = walk(officer_client, limit=4)

        assert seen == ids_in_order(decisions, "-predicted_at", "-id")
        assert len(seen) == len(set(seen)) == 23
        assert sizes == [4, 4, 4, 4, 4, 3]

    def test_a_page_exactly_full_has_no_next(self, officer_client, decisions):
        body = officer_client.get(URL, {"limit": 23}).json()

        assert len(body["results"]) == 23
        assert body["next"] is None

    def test_the_default_page_holds_fifty(self, officer_client, model_version, ingest):
        ingest(*DecisionPayloadFactory.build_batch(51))

        body = officer_client.get(URL).json()

        assert len(body["results"]) == 50
        assert body["next"] is not None

    @pytest.mark.parametrize(
        ("ordering", "sort"),
        [
            ("predicted_at", ("predicted_at", "id")),
            ("score", ("score", "id")),
            ("-score", ("-score", "-id")),
        ],
    )
    def test_every_ordering_visits_every_decision_once(
        self, officer_client, decisions, ordering, sort
    ):
        seen, _ = walk(officer_client, limit=5, ordering=ordering)

        assert seen == ids_in_order(decisions, *sort)

    def test_pages_follow_the_filters(self, officer_client, decisions):
        seen, sizes = walk(officer_client, limit=5, model="credit", version="1")

        assert seen == ids_in_order(
            decisions.filter(registered_model__name="credit", model_version__version="1"),
            "-predicted_at",
            "-id",
        )
        assert sizes == [5, 5, 2]


class TestFilters:
    def test_it_filters_by_model(self, officer_client, decisions):
        seen, _ = walk(officer_client, model="credit-eu")

        assert seen == ids_in_order(
            decisions.filter(registered_model__name="credit-eu"), "-predicted_at", "-id"
        )
        assert len(seen) == 5

    def test_it_filters_by_version(self, officer_client, decisions):
        body = officer_client.get(URL, {"model": "credit", "version": "2"}).json()

        assert {(d["model"], d["version"]) for d in body["results"]} == {("credit", "2")}
        assert len(body["results"]) == 6

    def test_from_is_inclusive_and_to_is_exclusive(self, officer_client, decisions, base_time):
        start, end = base_time + timedelta(hours=2), base_time + timedelta(hours=5)

        seen, _ = walk(
            officer_client, limit=2, **{"from": start.isoformat(), "to": end.isoformat()}
        )

        expected = decisions.filter(predicted_at__gte=start, predicted_at__lt=end)
        assert seen == ids_in_order(expected, "-predicted_at", "-id")
        assert len(seen) == 6  # hours 2, 3 and 4, two decisions each
        times = {Decision.objects.get(pk=i).predicted_at for i in seen}
        assert min(times) == start and max(times) == end - timedelta(hours=1)

    def test_filters_combine(self, officer_client, decisions, base_time):
        start = base_time + timedelta(hours=7)

        body = officer_client.get(URL, {"model": "credit", "from": start.isoformat()}).json()

        expected = decisions.filter(registered_model__name="credit", predicted_at__gte=start)
        assert [d["id"] for d in body["results"]] == ids_in_order(expected, "-predicted_at", "-id")
        assert len(body["results"]) == 4

    def test_an_unknown_model_is_refused_by_name(self, officer_client, decisions):
        error = officer_client.get(URL, {"model": "nope"}).json()["error"]
        assert error["details"] == {"model": ["names no model you may see ('nope')"]}


def encoded_cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"cursor": "not-a-cursor"},
        {"cursor": encoded_cursor({"a": 1})},
        {"cursor": encoded_cursor(["yesterday", 3])},
        {"cursor": encoded_cursor(["cheap", 3]), "ordering": "score"},
        {"ordering": "request_id"},
        {"from": "yesterday"},
        {"to": "2026-13-45"},
        {"score_min": "high"},
    ],
    ids=[
        "limit_zero",
        "limit_too_big",
        "limit_not_a_number",
        "cursor_garbage",
        "cursor_not_a_pair",
        "cursor_bad_time",
        "cursor_bad_score",
        "ordering_unknown",
        "from_not_a_time",
        "to_not_a_time",
        "score_min_not_a_number",
    ],
)
def test_invalid_search_parameters_are_a_400_in_the_error_shape(officer_client, decisions, params):
    response = officer_client.get(URL, params)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] in ("invalid", "invalid_parameters")
    assert error["message"]


def test_a_cursor_s_moment_in_any_offset_reads_in_utc(officer_client, decisions):
    """+18:04 is valid ISO-8601 that PostgreSQL refuses as an offset: it was a 500."""
    cursor = encoded_cursor(["1843-04-14T01:21:43+18:04", 3])
    assert officer_client.get(URL, {"cursor": cursor}).json() == {"results": [], "next": None}
    outside = encoded_cursor(["0001-01-01T00:00:00+05:00", 3])
    assert officer_client.get(URL, {"cursor": outside}).status_code == 400


def test_a_period_in_any_offset_reads_in_utc(officer_client, decisions):
    """+18:04 is valid ISO-8601 that PostgreSQL refuses as an offset."""
    response = officer_client.get(URL, {"from": "2026-01-01T00:00:00+18:04", "limit": "1"})
    assert response.status_code == 200, response.content


def test_invalid_filter_values_are_named_in_details(officer_client, model_version):
    error = officer_client.get(URL, {"from": "yesterday", "limit": "5"}).json()["error"]

    assert error["code"] == "invalid_parameters"
    assert list(error["details"]) == ["from"]


@pytest.mark.parametrize(
    "params, named",
    [
        ({"scor_min": "0.5"}, ["scor_min"]),  # a typo must not return every decision
        ({"order": "-score", "limit": "5"}, ["order"]),
        ({"model": "credit", "foo": "", "bar": "1"}, ["bar", "foo"]),
    ],
    ids=["misspelt_filter", "misspelt_ordering", "two_unknown"],
)
def test_an_unknown_search_parameter_is_refused_by_name_not_ignored(
    officer_client, decisions, params, named
):
    error = officer_client.get(URL, params).json()["error"]

    assert error["code"] == "invalid_parameters"
    assert sorted(error["details"]) == named
    assert "score_min" in error["details"][named[0]][0]  # the ones it takes are listed
    assert not AuditEvent.objects.filter(action="decisions.searched").exists()


@pytest.mark.parametrize(
    "params, named",
    [
        ({"score_min": "0.9", "score_max": "0.1"}, "score_min"),
        ({"from": "2026-12-10T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, "from"),
        ({"from": "2026-12-10T00:00:00Z", "to": "2026-12-10T00:00:00Z"}, "from"),
        (
            {"model": "credit", "feature.age__gte": "60", "feature.age__lte": "30"},
            "feature.age__gte",
        ),
    ],
    ids=["scores", "times", "empty_period", "feature_bounds"],
)
def test_a_range_whose_ends_are_swapped_is_refused_not_answered_empty(
    officer_client, decisions, params, named
):
    error = officer_client.get(URL, params).json()["error"]

    assert error["code"] == "invalid_parameters"
    assert list(error["details"]) == [named]


def test_equal_score_bounds_and_the_page_s_own_parameters_are_a_search(officer_client, decisions):
    params = {"score_min": "0.5", "score_max": "0.5", "ordering": "score", "limit": "5"}
    assert officer_client.get(URL, params).status_code == 200


@pytest.mark.parametrize("who", ["compliance_officer", "auditor", "domain_expert"])
def test_the_list_query_count_does_not_grow_with_the_page(
    api_client, users, model_version, ingest, who, django_assert_max_num_queries
):
    ingest(*DecisionPayloadFactory.build_batch(60))
    client = api_client(users[who])

    for limit in (1, 10, 60):
        # the page (plain rows, model and version joined) and the audit event (on
        # PostgreSQL one statement with the sealing lock that keeps ids in commit
        # order); the first also reads the roles (kept on this user object: the client
        # passes it, not a session) and the version's schema (kept by the process)
        with django_assert_max_num_queries(4 if limit == 1 else 2):
            response = client.get(URL, {"limit": limit})
        assert len(response.json()["results"]) == limit


def test_every_api_search_is_audited_with_its_filters(api_client, auditor, model_version):
    api_client(auditor).get(URL, {"model": "credit", "limit": 5})
    (event,) = AuditEvent.objects.filter(action="decisions.searched")
    assert event.actor == auditor
    assert event.details == {"params": {"model": "credit", "limit": "5"}, "via": "api"}


@pytest.mark.parametrize(
    "params, named, words",
    [
        ({"model": "credit", "prediction": "maybe"}, "prediction", "'bad', 'good'"),
        ({"model": "credit", "top_reason": "incme"}, "top_reason", "not a feature"),
        ({"model": "credit", "feature.housing": "castle"}, "feature.housing", "'own'"),
    ],
    ids=["prediction_not_a_class", "top_reason_not_a_feature", "not_a_category"],
)
def test_a_value_the_named_model_cannot_have_is_refused_not_answered_empty(
    officer_client, decisions, params, named, words
):
    """An empty answer reads as "none were declined for that reason"; a misspelt reason
    or class is a mistake, and the model the search names says what it can be."""
    error = officer_client.get(URL, params).json()["error"]

    assert error["code"] == "invalid_parameters"
    assert list(error["details"]) == [named]
    assert words in error["details"][named][0]


def test_a_hidden_model_answers_such_a_value_as_a_missing_one_does(
    api_client, domain_expert, decisions
):
    """credit-eu is not the domain expert's: its classes and features are not told."""
    client = api_client(domain_expert)
    for params in ({"prediction": "maybe"}, {"top_reason": "incme"}, {"feature.housing": "x"}):
        hidden = client.get(URL, {"model": "credit-eu", **params}).json()["error"]
        missing = client.get(URL, {"model": "credit-xx", **params}).json()["error"]
        assert list(hidden["details"]) == list(missing["details"]) == ["model"]


@pytest.mark.parametrize(
    "params, named",
    [
        ({"model": "credt"}, "model"),  # misspelt: "none found" read as "none decided"
        ({"model": "credit", "version": "9"}, "version"),
    ],
    ids=["model", "version"],
)
def test_a_model_or_version_you_cannot_search_is_refused_not_answered_empty(
    officer_client, decisions, params, named
):
    error = officer_client.get(URL, params).json()["error"]

    assert error["code"] == "invalid_parameters"
    assert list(error["details"]) == [named]


def test_a_hidden_model_is_refused_in_the_same_words_as_a_missing_one(
    api_client, domain_expert, decisions
):
    """credit-eu exists but is not the domain expert's: the answer must not tell."""
    client = api_client(domain_expert)
    hidden = client.get(URL, {"model": "credit-eu"}).json()["error"]
    missing = client.get(URL, {"model": "credit-xx"}).json()["error"]

    assert hidden["details"]["model"] == [
        reason.replace("credit-xx", "credit-eu") for reason in missing["details"]["model"]
    ]
    assert hidden["message"] == missing["message"].replace("credit-xx", "credit-eu")
    for version in ("1", "9"):  # nor its versions
        hidden_version = client.get(URL, {"model": "credit-eu", "version": version}).json()
        assert list(hidden_version["error"]["details"]) == ["model"]
