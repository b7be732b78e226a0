"""Reasons people can read: "Previous defaults = 2 — raised the risk of “bad” (+0.76)", the
same sentences on the decision page and in the API, masked values never in them."""

from __future__ import annotations

import html

import pytest
from django.test import Client

from auditapp.decisions.models import Decision
from explain.models import Explanation
from tests.factories import DecisionPayloadFactory
from tests.reports.conftest import explain

pytestmark = pytest.mark.django_db

SECRET = {"sex": "female", "income": 44123.45}  # both sensitive in the demo schema
SHOWN = {"income": "44,123"}  # how a reader with view_sensitive sees it


def shown(feature, value) -> str:
    """Independently of schema.py: the demo schema declares no units or decimals."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if feature.type == "integer" or float(value).is_integer() or abs(value) >= 1000:
        return f"{round(value):,}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


@pytest.fixture
def explained(model_version, ingest) -> list[Decision]:
    """Twenty explained decisions (both outcomes), the first with a secret sex and income."""
    items = DecisionPayloadFactory.build_batch(20)
    items[0]["inputs"].update(SECRET)
    ids = [r["id"] for r in ingest(*items)]
    explain(ids, model_version)
    return list(Decision.objects.with_related().filter(pk__in=ids).order_by("pk"))


def expected(decision: Decision, hidden=()) -> list[dict]:
    """The stored SHAP attributions pushing towards "bad", largest first, four at most."""
    schema = decision.model_version.parsed_schema
    features = {f.name: f for f in schema.features}
    inputs = decision.full_inputs()
    stored = Explanation.objects.get(decision=decision, method="shap").attributions
    floor = 0.01 * sum(abs(v) for v in stored.values())  # a push under 1 % is no reason
    pushing = sorted(
        ((v, n) for n, v in stored.items() if v > 0 and v >= floor and n not in hidden),
        reverse=True,
    )[:4]
    return [
        {
            "feature": name,
            "value": inputs[name],
            "direction": "raised",
            "contribution": value,
            "text": f"{features[name].label} = {shown(features[name], inputs[name])} "
            f"— raised the risk of “bad” ({value:+.2f})"
            if value >= 0.005
            else f"— raised the risk of “bad” ({value:+.2g})",
        }
        for value, name in pushing
    ]


def page(user, decision: Decision) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(f"/decisions/{decision.pk}/")
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_the_api_and_the_page_give_the_reasons_with_values_and_stored_contributions(
    explained, api_client, compliance_officer
):
    counts = set()
    for decision in explained:
        detail = api_client(compliance_officer).get(f"/api/v1/decisions/{decision.pk}").json()
        assert detail["reasons"] == expected(decision)
        counts.add(len(detail["reasons"]))
    assert max(counts) == 4

    first = explained[0]
    text = page(compliance_officer, first)
    for reason in expected(first):
        assert reason["text"] in text
    assert "<td>44,123</td>" in text  # the inputs, formatted
    # The waterfall's bars say "feature = value".
    assert f"Annual income (EUR) = {SHOWN['income']}" in text
    assert "Sex = female" in text


def test_masked_values_never_reach_the_sentences(explained, api_client, auditor):
    first = explained[0]
    detail = api_client(auditor).get(f"/api/v1/decisions/{first.pk}").json()

    assert detail["reasons"] == expected(first, hidden={"sex", "income"})
    assert not {"sex", "income"} & {r["feature"] for r in detail["reasons"]}
    text = page(auditor, first)
    for reason in detail["reasons"]:
        assert reason["text"] in text
    for leak in ("44,123", "44123", "female", "Sex =", "Annual income (EUR) ="):
        assert leak not in text
        assert all(leak not in r["text"] for r in detail["reasons"])


def test_the_decision_page_says_the_outcome_in_words_and_colours_it(explained, compliance_officer):
    bad = next(d for d in explained if d.prediction == "bad")
    good = next(d for d in explained if d.prediction == "good")

    assert (
        'class="pill big adverse" id="outcome-pill">bad</span> <span class="muted">(declined)'
        in (page(compliance_officer, bad))
    )
    assert (
        'class="pill big favourable" id="outcome-pill">good</span> <span class="muted">(approved)'
        in (page(compliance_officer, good))
    )
