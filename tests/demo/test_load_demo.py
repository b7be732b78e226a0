"""The quick start's demo data: users, a model, decisions, outcomes and a real downturn."""

from __future__ import annotations

import itertools
from datetime import timedelta
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command

from auditapp.decisions.models import Decision, Outcome
from auditapp.demo.management.commands.load_demo import (
    DEMO_USERS,
    OUTCOMES_AFTER,
    SHOCK_FOR,
    demo_password,
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

    recent = [d for d in decisions if d.predicted_at >= version.created_at - SHOCK_FOR]
    earlier = [d for d in decisions if d.predicted_at < version.created_at - SHOCK_FOR]
    income = {
        name: np.median([d.inputs["income"] for d in group])
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
