"""The quick start's demo data: users, a model, decisions, outcomes and a real downturn.

The demo's story is checked on the figures a user sees, each computed here from
the stored decisions, outcomes and inputs (scikit-learn and numpy, not Attest's
monitoring): the model declines like a lender, its scores rank the recorded
outcomes well, and the downturn moves both the inputs and the decline rate.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from sklearn.metrics import roc_auc_score

from auditapp.approvals.models import Approval
from auditapp.decisions.models import Decision, Outcome
from auditapp.demo.management.commands.load_demo import (
    DEMO_USERS,
    OUTCOMES_AFTER,
    demo_password,
    downturn_start,
)
from auditapp.monitoring.models import MetricSnapshot
from auditapp.registry.models import ModelVersion
from explain import batches

pytestmark = pytest.mark.django_db


def load(decisions: int) -> str:
    out = StringIO()
    call_command("load_demo", "--decisions", str(decisions), stdout=out)
    return out.getvalue()


def test_the_demo_has_outcomes_for_old_decisions_and_a_shifted_recent_stream(role_groups):
    output = load(300)

    version = ModelVersion.objects.get(registered_model__name="credit", version="1")
    assert version.stage == ModelVersion.PRODUCTION
    decisions = list(Decision.objects.order_by("predicted_at"))
    assert len(decisions) == 300
    old = [d for d in decisions if d.predicted_at < version.created_at - OUTCOMES_AFTER]
    outcomes = dict(Outcome.objects.values_list("decision_id", "outcome"))
    assert set(outcomes) == {d.pk for d in old} and len(old) > 100
    assert set(outcomes.values()) == {"good", "bad"}
    assert f"300 new decisions, {len(old)} new outcomes" in output

    downturn = downturn_start(version.created_at)
    recent = [d for d in decisions if d.predicted_at >= downturn]
    earlier = [d for d in decisions if d.predicted_at < downturn]
    income = {
        name: np.median([d.full_inputs()["income"] for d in group])
        for name, group in (("recent", recent), ("earlier", earlier))
    }
    assert income["recent"] < 0.85 * income["earlier"]  # incomes fell by a quarter

    # Every complete day of the period has a monitoring snapshot queued for the worker.
    days = list(
        MetricSnapshot.objects.filter(model_version=version, window="day")
        .order_by("window_start")
        .values_list("window_start", "window_end")
    )
    assert days[0][0] <= decisions[0].predicted_at < days[0][1]
    assert all(end - start == timedelta(days=1) for start, end in days)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(days))
    assert days[-1][1] <= version.created_at < days[-1][1] + timedelta(days=1)

    # Loading again adds nothing: the decisions and outcomes are already there.
    assert "0 new decisions, 0 new outcomes" in load(300)
    assert Outcome.objects.count() == len(old)
    assert all(
        o.observed_at - o.decision.predicted_at == timedelta(days=5)
        for o in Outcome.objects.select_related("decision")
    )


def income_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's deciles, a pseudo-count of 0.5 a bin."""
    edges = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    expected = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins) + 0.5
    actual = np.bincount(np.searchsorted(edges, current, side="right"), minlength=bins) + 0.5
    expected, actual = expected / expected.sum(), actual / actual.sum()
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def test_the_demo_model_declines_like_a_lender_and_the_downturn_shows(role_groups):
    """The demo as `make run` loads it (2,000 decisions): 15-30 % declined, scores that
    rank the recorded outcomes (ROC AUC >= 0.75), and on each complete downturn day
    more declines than before and incomes shifted past PSI 0.2 (measured: 20 %, 0.82,
    25-39 % against 17-18 %, PSI 0.34 or more, whatever the time of day of loading)."""
    load(2000)
    version = ModelVersion.objects.get(registered_model__name="credit", version="1")
    decisions = list(
        Decision.objects.filter(model_version=version)
        .order_by("predicted_at")
        .values("pk", "predicted_at", "prediction", "score", "inputs")
    )
    assert len(decisions) == 2000
    declined = np.array([d["prediction"] == "bad" for d in decisions])
    assert 0.15 <= declined.mean() <= 0.30

    outcomes = dict(Outcome.objects.values_list("decision_id", "outcome"))
    recorded = [d for d in decisions if d["pk"] in outcomes]
    assert len(recorded) >= 900
    truth = [outcomes[d["pk"]] == "bad" for d in recorded]
    assert roc_auc_score(truth, [d["score"] for d in recorded]) >= 0.75

    downturn = downturn_start(version.created_at)
    before = np.array([d["predicted_at"] < downturn for d in decisions])
    days = [downturn + timedelta(days=i) for i in range(2)]  # complete: today follows
    assert days[-1] + timedelta(days=1) <= version.created_at
    incomes = {
        d.pk: d.full_inputs()["income"] for d in Decision.objects.filter(model_version=version)
    }
    income = np.array([incomes[d["pk"]] for d in decisions], dtype=float)
    moments = np.array([d["predicted_at"] for d in decisions])
    rate_before = declined[before].mean()
    for day in days:
        on_day = (moments >= day) & (moments < day + timedelta(days=1))
        assert on_day.sum() >= 100
        assert declined[on_day].mean() > rate_before + 0.05, day
        assert income_psi(income[before], income[on_day]) > 0.2, day
    # The last day before the downturn: the same model, inputs not shifted.
    last_before = (moments >= days[0] - timedelta(days=1)) & (moments < days[0])
    assert income_psi(income[before], income[last_before]) < 0.2


def wait_for_demo(*args: str) -> str:
    out = StringIO()
    call_command("wait_for_demo", "--host", "127.0.0.1:9999", *args, stdout=out)
    return out.getvalue()


def test_the_ready_box_comes_once_the_demo_is_explained_and_says_when_it_is_not(role_groups):
    """`make run` prints the address and every login last, after the worker's SHAP."""
    load(40)
    ids = list(Decision.objects.values_list("pk", flat=True))
    version = ModelVersion.objects.get(registered_model__name="credit", version="1")

    waiting = wait_for_demo("--timeout", "0")
    assert "0 of 40 demo decisions are explained so far" in waiting
    assert "Open http://127.0.0.1:9999/" in waiting

    batches.run_batch(version.pk, "shap", ids)
    ready = wait_for_demo("--timeout", "60").splitlines()
    assert "All 40 demo decisions are explained." in "\n".join(ready)
    box = ready[ready.index(next(line for line in ready if "Attest is ready" in line)) - 1 :]
    assert box[0] == box[-1] and set(box[0]) == {"+", "-"}  # a frame, top and bottom
    for username, _ in DEMO_USERS:
        assert any(f"{username} " in line and demo_password(username) in line for line in box)


def test_the_demo_promotes_its_model_with_four_eyes_as_outside_the_tests(role_groups, settings):
    settings.ATTEST_FOUR_EYES_NEW_MODELS = True  # the real default (the tests' is off)

    load(40)

    version = ModelVersion.objects.select_related("registered_model").get()
    assert version.registered_model.four_eyes is True
    assert version.stage == "production"
    approval = Approval.objects.with_state().select_related("step").get()
    assert (approval.kind, approval.state) == ("stage", "approved")
    assert (approval.requester_name, approval.step.decider_name) == ("mlengineer", "compliance")
