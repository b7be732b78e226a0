"""The demo's declined applicants get counterfactuals: each re-scored here by the demo's own
pipeline (predict / predict_proba on the changed row), flipping to "approved" with only the
changes its schema allows (income and employment up, loan and debt ratio down, previous
defaults, age and sex never)."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command

from auditapp.decisions.models import Decision
from auditapp.demo import credit
from auditapp.registry.models import ModelVersion
from auditapp.registry.services import load_model
from explain import tasks
from explain.counterfactual_presenters import nearest_sentence
from explain.models import CounterfactualWork

# The search runs in this process on both databases alike (the embedded default's work rows
# and worker: tests/explain/test_counterfactual_flow.py), so the PostgreSQL suite alone runs it.
pytestmark = [pytest.mark.django_db, pytest.mark.database_neutral]


def test_the_demo_s_declined_decisions_get_counterfactuals_that_flip(role_groups):
    call_command("load_demo", "--decisions", "300", stdout=StringIO())
    version = ModelVersion.objects.get(registered_model__name="credit", version="1")
    declined = list(Decision.objects.filter(model_version=version, prediction="bad").order_by("pk"))
    assert len(declined) >= 30
    work = CounterfactualWork.objects.filter(decision__model_version=version)
    assert set(work.values_list("decision_id", flat=True)) == {d.pk for d in declined}

    ids = [d.pk for d in declined]
    for start in range(0, len(ids), 8):  # as the worker's tasks would, 8 a batch
        tasks.counterfactual_batch.run(version.pk, ids[start : start + 8])

    model = load_model(version)
    bad = list(model.classes_).index("bad")
    found, sparsity, distance = 0, [], []
    for row in work.select_related("result", "decision"):
        assert row.status == CounterfactualWork.DONE, row.error
        inputs = row.decision.full_inputs()
        for item in row.result.counterfactuals:
            changed = {**inputs, **{k: v["to"] for k, v in item["changes"].items()}}
            frame = pd.DataFrame([changed])[credit.FEATURES]
            assert model.predict(frame)[0] == "good"
            assert model.predict_proba(frame)[0, bad] == pytest.approx(item["score"], abs=1e-12)
            assert not {"age", "sex", "prior_defaults"} & set(item["changes"])
            for name, up in (("income", True), ("employment_years", True)):
                if name in item["changes"]:
                    assert (changed[name] > inputs[name]) is up
            for name in ("loan_amount", "debt_ratio"):
                if name in item["changes"]:
                    assert changed[name] < inputs[name]
            sparsity.append(item["sparsity"])
            distance.append(item["distance"])
        found += bool(row.result.counterfactuals)
        if row.result.counterfactuals:
            text = nearest_sentence(row.decision)
            assert text.startswith("The application would have been approved if the ")
            assert text.endswith(".") and "_" not in text.split(" if ")[1].split(" had been")[0]
    # Nearly every declined applicant has something they could change.
    assert found >= 0.9 * len(declined)
    assert 1 <= np.mean(sparsity) <= 3
    print(  # the figures the README quotes (pytest -s)
        f"demo: {found}/{len(declined)} declined decisions with counterfactuals, "
        f"{len(sparsity)} counterfactuals, mean sparsity {np.mean(sparsity):.2f}, "
        f"mean distance {np.mean(distance):.2f}"
    )
