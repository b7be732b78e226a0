"""The top_reason search reads each decision's newest SHAP result's reasons from their
own indexed table (explain.models.TopReasons): kept in step with the results, narrowed
to the search's period, and filled for results stored before the table existed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection

from auditapp.accounts import roles
from auditapp.decisions.models import Decision
from explain import batches, claims, explainers, storing
from explain.models import Explanation, TopReasons
from explain.ranking import rank_features
from explain.services import request_explanations
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db


def search(client, **params) -> set[int]:
    response = client.get("/api/v1/decisions", {"limit": 500, **params})
    assert response.status_code == 200, response.content
    return {d["id"] for d in response.json()["results"]}


def newest_top3() -> dict[int, list[str]]:
    rows = Explanation.objects.with_results().filter(method="shap", result__isnull=False)
    return {e.decision_id: e.top_features[:3] for e in rows}


def reasons() -> dict[int, list[str]]:
    return {row.decision_id: row.features for row in TopReasons.objects.all()}


def store_again(model_version, decision_id: int, *, officer, change) -> None:
    """Explain the decision again as a reviewer's request does, `change` applied to what
    the engine computed before it is stored."""
    decision = Decision.objects.get(pk=decision_id)
    request_explanations(roles.Actor(user=officer), decision, ["shap"])
    claimed = claims.claim(model_version.pk, "shap", [decision_id])
    context, explainer = explainers.cached_explainer(model_version, "shap")
    computed = batches.explain_claimed(context, explainer, "shap", claimed, False, 1e-3)
    change(computed)
    storing.store_results(claimed, computed, model_version, "shap", 1.0)


@pytest.fixture
def explained(model_version, ingest) -> list[int]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    payloads = DecisionPayloadFactory.build_batch(30)
    for n, payload in enumerate(payloads):
        payload["predicted_at"] = (start + timedelta(days=n)).isoformat()
    ids = [r["id"] for r in ingest(*payloads)]
    batches.run_batch(model_version.pk, "shap", ids)
    return ids


def test_every_shap_result_stores_its_top_three_as_reasons(explained):
    assert reasons() == newest_top3() and len(reasons()) == 30


def test_a_newer_result_replaces_the_reasons_of_the_older(
    explained, model_version, api_client, compliance_officer
):
    """Searched by a reason only its old result had, the decision is no longer found."""
    client = api_client(compliance_officer)
    target = explained[0]
    old = reasons()[target]
    names = model_version.parsed_schema.names
    unusual = [n for n in names if n not in old][:3]  # the new result's top three

    def reorder(computed):
        for result in computed:
            # Largest weights on three features the old result did not rank first.
            weights = {n: 0.001 * i for i, n in enumerate(names)}
            weights.update({unusual[0]: 3.0, unusual[1]: -2.0, unusual[2]: 1.0})
            result.attributions, result.top_features = weights, rank_features(weights, len(names))

    store_again(model_version, target, officer=compliance_officer, change=reorder)

    assert reasons()[target] == unusual == newest_top3()[target]
    assert target in search(client, top_reason=unusual[2])
    assert target not in search(client, top_reason=old[0])
    assert reasons() == newest_top3()


def test_a_failed_attempt_keeps_the_reasons_of_the_newest_result_stored(
    explained, model_version, compliance_officer
):
    target = explained[1]
    before = reasons()[target]

    def fail(computed):
        computed[0].error = "the model raised"

    store_again(model_version, target, officer=compliance_officer, change=fail)
    assert reasons()[target] == before == newest_top3()[target]


def test_the_period_narrows_a_top_reason_search(explained, api_client, compliance_officer):
    client = api_client(compliance_officer)
    top = newest_top3()
    feature = max(
        {f for t in top.values() for f in t}, key=lambda f: sum(f in t for t in top.values())
    )
    # The fixture's decisions are one a day from 1 November: the 10th to the 19th.
    period = {"from": "2026-11-10T00:00:00+00:00", "to": "2026-11-20T00:00:00+00:00"}
    expected = {explained[n] for n in range(9, 19) if feature in top[explained[n]]}
    assert search(client, top_reason=feature, **period) == expected
    assert 0 < len(expected) < len(search(client, top_reason=feature))


@pytest.mark.django_db(transaction=True)
def test_one_row_a_decision_goes_back_to_a_row_a_reason_and_forward_unchanged(explained):
    expected = newest_top3()
    call_command("migrate", "explain", "0011", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT decision_id, feature, rank FROM explain_topreason")
        rows = cursor.fetchall()
    back: dict[int, list[str]] = {}
    for decision_id, feature, _ in sorted(rows, key=lambda row: (row[0], row[2])):
        back.setdefault(decision_id, []).append(feature)
    assert back == expected and len(rows) == 90
    call_command("migrate", verbosity=0)
    assert reasons() == expected


@pytest.mark.django_db(transaction=True)
def test_the_migration_fills_the_reasons_of_results_stored_before_it(explained):
    expected = newest_top3()
    call_command("migrate", "explain", "0006", verbosity=0)
    call_command("migrate", verbosity=0)
    assert reasons() == expected and len(expected) == 30


REASON_SPAN = re.compile(
    r'<a href="/decisions/(\d+)/">|<span class="reason[^"]*" data-feature="(\w+)" '
    r'data-towards="(\w+)"'
)


def test_the_results_page_tells_which_way_each_reason_pushed(
    explained, model_version, client, compliance_officer
):
    """A declined person's top three may hold a feature that argued for them: each reason
    says which way it pushed, as its stored attribution's sign does."""
    client.force_login(compliance_officer)
    html = client.get("/decisions/", {"model": model_version.registered_model.name}).content
    shown: dict[int, dict[str, str]] = {}
    current = None
    for decision_id, feature, towards in REASON_SPAN.findall(html.decode()):
        if decision_id:
            current = shown.setdefault(int(decision_id), {})
        else:
            current[feature] = towards

    target = model_version.parsed_schema.target
    stored = {
        e.decision_id: e.attributions
        for e in Explanation.objects.with_results().filter(method="shap", result__isnull=False)
    }
    assert len(shown) == 30
    both = set()
    for decision_id, towards in shown.items():
        assert list(towards) == reasons()[decision_id]
        for feature, way in towards.items():
            pushed_up = stored[decision_id][feature] * target.adverse_sign > 0
            assert way == ("adverse" if pushed_up else "favourable"), (decision_id, feature)
            both.add(way)
    assert both == {"adverse", "favourable"}  # the page has reasons of both kinds
