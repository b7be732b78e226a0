"""Champion against challenger on the same inputs: every figure of the comparison is the two
pipelines' own (predict, predict_proba, an independent TreeSHAP), and promoting the
challenger changes its stage and the traffic policy, for those allowed only."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from django.test import Client
from django.utils import timezone
from sklearn.metrics import accuracy_score

from auditapp.accounts import roles
from auditapp.decisions.models import SHADOW, Decision
from auditapp.decisions.outcomes import record_outcomes
from auditapp.demo.credit import FEATURES
from auditapp.registry.models import ModelVersion
from auditapp.serving.compare import compare
from auditapp.serving.services import read_traffic, score_shadows
from tests.reference import tree_shap_by_feature
from tests.reports.conftest import explain
from tests.serving.helpers import instance, predict_url, put_policy

pytestmark = pytest.mark.django_db

PAIRS = 40


@pytest.fixture
def pairs(api_client, admin, ml_engineer, versions):
    """40 decisions served by v1, each scored by v2 in its shadow; outcomes for half."""
    put_policy(api_client(admin), production="1", shadow=["2"])
    sent = [instance(n, subject_ref=f"s-{n}") for n in range(PAIRS)]
    response = api_client(ml_engineer).post(predict_url(), {"instances": sent}, format="json")
    assert response.status_code == 200, response.json()
    served = [r["decision_id"] for r in response.json()["results"]]
    assert score_shadows(served, [versions["2"].pk]) == PAIRS
    observed = (timezone.now() - timedelta(minutes=1)).isoformat()
    outcomes = [
        {"decision_id": pk, "outcome": "bad" if n % 3 == 0 else "good", "observed_at": observed}
        for n, pk in enumerate(served[::2])
    ]
    record_outcomes(roles.Actor(user=ml_engineer), {"outcomes": outcomes})
    return sent, served, {o["decision_id"]: o["outcome"] for o in outcomes}


def test_every_figure_is_the_two_pipelines_own_on_the_same_inputs(pairs, versions, pipelines):
    sent, served, outcomes = pairs
    shadows = list(Decision.objects.filter(arm=SHADOW).order_by("id").values_list("id", flat=True))
    explain(served, versions["1"])
    explain(shadows, versions["2"])

    comparison = compare(versions["1"], versions["2"])

    frame = pd.DataFrame([item["inputs"] for item in sent])[FEATURES]
    champion, challenger = pipelines["1"], pipelines["2"]
    bad = list(champion.classes_).index("bad")
    a_pred, b_pred = champion.predict(frame), challenger.predict(frame)
    a_score = champion.predict_proba(frame)[:, bad]
    b_score = challenger.predict_proba(frame)[:, bad]
    assert comparison.pairs == PAIRS
    assert 0 < comparison.agreement < 1  # the two versions differ on some applicants
    assert comparison.agreement == pytest.approx(np.mean(a_pred == b_pred))
    difference = comparison.score_difference
    assert difference["mean"] == pytest.approx(np.mean(b_score - a_score), abs=1e-9)
    assert difference["p95"] == pytest.approx(np.percentile(b_score - a_score, 95), abs=1e-9)
    assert sum(difference["counts"]) == PAIRS
    disagreeing = int(np.sum(a_pred != b_pred))
    assert len(comparison.disagreements) == min(disagreeing, 10)
    gaps = [row["gap"] for row in comparison.disagreements]
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[0] == pytest.approx(np.abs(b_score - a_score)[a_pred != b_pred].max(), abs=1e-9)

    # Performance on the pairs whose served decision has an outcome, against sklearn.
    known = [i for i, pk in enumerate(served) if pk in outcomes]
    truth = [outcomes[served[i]] == "bad" for i in known]
    for side, predictions in (("a", a_pred), ("b", b_pred)):
        figures = comparison.performance[side]
        assert figures["outcomes"] == len(known)
        expected = accuracy_score(truth, [predictions[i] == "bad" for i in known])
        assert figures["accuracy"] == pytest.approx(expected)

    # Fairness: the favourable outcome's rate per group of a protected feature, per version.
    sexes = frame["sex"].astype(str).to_numpy()
    for side, predictions in (("a", a_pred), ("b", b_pred)):
        rates = comparison.fairness[side]["sex"]["selection_rate"]
        for group in set(sexes):
            assert rates[group] == pytest.approx(np.mean(predictions[sexes == group] == "good"))

    # The features whose SHAP attributions differ most, from an independent TreeSHAP.
    a_shap = [tree_shap_by_feature(champion, frame.iloc[[i]], FEATURES)[0] for i in range(PAIRS)]
    b_shap = [tree_shap_by_feature(challenger, frame.iloc[[i]], FEATURES)[0] for i in range(PAIRS)]
    expected_gap = {
        name: np.mean([abs(b[name] - a[name]) for a, b in zip(a_shap, b_shap, strict=True)])
        for name in FEATURES
    }
    assert comparison.explained_pairs == PAIRS
    for row in comparison.features:
        assert row["mean_abs_difference"] == pytest.approx(expected_gap[row["feature"]], abs=1e-9)
    top = max(expected_gap, key=expected_gap.get)
    assert comparison.features[0]["feature"] == top


def test_the_page_shows_the_comparison_and_only_stage_changers_may_promote(pairs, users, versions):
    for who, promotes in (("compliance_officer", False), ("auditor", False), ("admin", True)):
        client = Client()
        client.force_login(users[who])
        page = client.get("/models/credit/compare/?a=1&b=2")
        assert page.status_code == 200
        text = page.content.decode()
        assert 'data-figure="agreement"' in text and "Where they disagree most" in text
        assert ("Promote version 2 to production" in text) is promotes
        refused = client.post("/models/credit/compare/promote", {"a": "1", "b": "2"})
        if not promotes:
            assert refused.status_code == 403
            assert ModelVersion.objects.get(pk=versions["2"].pk).stage != ModelVersion.PRODUCTION


def test_promoting_the_challenger_moves_its_stage_and_the_policy(pairs, users, versions):
    client = Client()
    client.force_login(users["admin"])

    response = client.post("/models/credit/compare/promote", {"a": "1", "b": "2"})

    assert response.status_code == 302
    assert response["Location"] == "/models/credit/compare/?a=2&b=1"
    assert ModelVersion.objects.get(pk=versions["2"].pk).stage == ModelVersion.PRODUCTION
    policy = read_traffic(versions["2"].registered_model).document
    assert (policy["production"], policy["shadow"]) == ("2", [])


@pytest.mark.parametrize(
    ("query", "status"),
    [("?a=1", 400), ("?a=1&b=1", 400), ("?a=1&b=9", 404), ("", 400)],
)
def test_a_comparison_names_two_existing_versions(pairs, users, query, status):
    client = Client()
    client.force_login(users["compliance_officer"])
    assert client.get(f"/models/credit/compare/{query}").status_code == status


def test_a_hidden_model_compares_as_a_missing_one(pairs, users):
    client = Client()
    client.force_login(users["outsider"])  # a domain expert not assigned to the model
    hidden = client.get("/models/credit/compare/?a=1&b=2")
    missing = client.get("/models/nothing/compare/?a=1&b=2")
    assert hidden.status_code == missing.status_code == 404


def test_the_traffic_page_links_production_to_each_shadow_s_comparison(pairs, users):
    client = Client()
    client.force_login(users["compliance_officer"])
    html = client.get("/models/credit/traffic/").content.decode()
    assert 'href="/models/credit/compare/?a=1&amp;b=2"' in html
