"""Every API list pages: ?limit= rows, newest first, and `next` for the rest. Before, the
reports, approvals, legal holds, subject requests and alerts answered their newest 200
or 500 and said nothing of the others."""

from __future__ import annotations

import pytest

from tests.factories import DecisionPayloadFactory

REPORT = {
    "kind": "model_compliance",
    "model": "credit",
    "version": "1",
    "from": "2026-11-01T00:00:00Z",
    "to": "2026-12-01T00:00:00Z",
    "format": "csv",
}
LISTS = {
    "/api/v1/reports": ("/api/v1/reports", REPORT),
    "/api/v1/legal-holds": (
        "/api/v1/legal-holds",
        {"model": "credit", "subject_ref": "c-1", "reason": "a claim"},
    ),
    "/api/v1/subject-requests": (
        "/api/v1/subject-requests",
        {"subject_ref": "c-1", "kind": "access", "reason": "asked"},
    ),
}


@pytest.mark.parametrize("url", list(LISTS))
def test_a_list_pages_newest_first_and_every_item_is_reached_once(
    api_client, admin, model_version, ingest, url
):
    ingest(DecisionPayloadFactory(subject_ref="c-1"))
    client = api_client(admin)
    post_url, body = LISTS[url]
    made = []
    for _ in range(5):
        response = client.post(post_url, body, format="json")
        assert response.status_code in (201, 202), response.content
        made.append(response.json()["id"])

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(url, params).json()
        assert len(page["results"]) <= 2
        seen += [item["id"] for item in page["results"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break

    assert seen == sorted(made, reverse=True)
    assert pages == 3
    everything = client.get(url).json()  # the default page holds them all, as before
    assert [item["id"] for item in everything["results"]] == seen and everything["next"] is None


@pytest.mark.parametrize(
    "url", [*LISTS, "/api/v1/approvals", "/api/v1/alerts", "/api/v1/audit/events"]
)
@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "99999999999999999999999"])
def test_a_cursor_that_no_page_gave_is_refused_by_name(
    api_client, admin, model_version, url, cursor
):
    error = api_client(admin).get(url, {"cursor": cursor}).json()["error"]

    assert error["code"] == "invalid_parameters"
    assert list(error["details"]) == ["cursor"]


@pytest.mark.parametrize("url", ["/api/v1/approvals", "/api/v1/alerts"])
def test_the_other_lists_take_a_page_size_and_say_where_the_next_page_is(
    api_client, admin, model_version, url
):
    answer = api_client(admin).get(url, {"limit": 1}).json()

    assert answer == {"results": [], "next": None}
