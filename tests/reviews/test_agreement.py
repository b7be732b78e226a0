"""The SHAP-LIME agreement rule on real models: it must not flood the review queue.

Two real gradient-boosting pipelines, registered through the real service: the
demo credit model (as `load_demo` trains it) and one trained on Adult. A few
hundred decisions of each are explained with SHAP and LIME by the worker's own
batch path, and the queue is read afterwards.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import skops.io
from django.utils import timezone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from auditapp.demo import credit
from auditapp.registry.services import assign_models
from auditapp.reviews import rules
from auditapp.reviews.models import ReviewCase
from explain import tasks
from explain.models import Explanation
from tests.datasets import adult

DECISIONS = 200
SMALL_SHARE = 0.05  # the rule may open cases on at most this share of decisions

ADULT_CATEGORICAL = [
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
]
ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
ADULT_FEATURES = ADULT_CATEGORICAL + ADULT_NUMERIC


@dataclass(frozen=True)
class RealModel:
    """A trained pipeline with what registering it and recording its decisions needs."""

    name: str
    artifact: bytes
    schema: dict
    background: bytes
    features: list[str]
    positive_class: str
    negative_class: str
    scores: np.ndarray
    rows: pd.DataFrame


def _csv(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def _positive_scores(model, frame: pd.DataFrame, positive) -> np.ndarray:
    return model.predict_proba(frame)[:, list(model.classes_).index(positive)]


@pytest.fixture(scope="module")
def demo_model() -> RealModel:
    """The demo's model, trained as load_demo trains it, and a spread of its replayed applicants.

    The applicants are the demo's: the last two of its fourteen days come after
    the economic shock.
    """
    frame = credit.applicants(6000, seed=7)
    model = credit.train_model(frame.iloc[:4000])
    replay = credit.applicants(2000, seed=11)
    shocked = np.arange(len(replay)) >= len(replay) * 12 // 14
    replay.loc[shocked] = credit.economic_shock(replay.loc[shocked])
    rows = replay.iloc[:: len(replay) // DECISIONS][:DECISIONS][credit.FEATURES]
    return RealModel(
        name="credit",
        artifact=skops.io.dumps(model),
        schema=credit.SCHEMA,
        background=_csv(frame[credit.FEATURES].iloc[4000:4200]),
        features=credit.FEATURES,
        positive_class="bad",
        negative_class="good",
        scores=_positive_scores(model, rows, "bad"),
        rows=rows,
    )


@pytest.fixture(scope="module")
def adult_model() -> RealModel:
    """A gradient-boosting pipeline on Adult's training rows; decisions on its test rows."""
    frame = adult()
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("categorical", OneHotEncoder(handle_unknown="ignore"), ADULT_CATEGORICAL)],
                    remainder="passthrough",
                ),
            ),
            ("model", GradientBoostingClassifier(n_estimators=120, max_depth=3, random_state=0)),
        ]
    ).fit(train[ADULT_FEATURES].iloc[:4800], train["income"].iloc[:4800])
    schema = {
        "features": [
            {"name": name, "type": "categorical", "categories": sorted(frame[name].unique())}
            for name in ADULT_CATEGORICAL
        ]
        + [{"name": name, "type": "integer", "min": 0} for name in ADULT_NUMERIC],
        "target": {
            "type": "classification",
            "classes": ["<=50K", ">50K"],
            "positive_class": ">50K",
        },
    }
    rows = test[ADULT_FEATURES].iloc[:DECISIONS]
    return RealModel(
        name="adult",
        artifact=skops.io.dumps(model),
        schema=schema,
        background=_csv(train[ADULT_FEATURES].iloc[4800:5000]),
        features=ADULT_FEATURES,
        positive_class=">50K",
        negative_class="<=50K",
        scores=_positive_scores(model, rows, ">50K"),
        rows=rows,
    )


def payloads(real: RealModel) -> list[dict]:
    start = timezone.now() - timedelta(days=2)
    items = []
    for i, (row, score) in enumerate(
        zip(real.rows.to_dict(orient="records"), real.scores, strict=True)
    ):
        items.append(
            {
                "model": real.name,
                "version": "1",
                "request_id": f"{real.name}-{i:05d}",
                "subject_ref": f"s-{i:05d}",
                "inputs": {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()},
                "prediction": real.positive_class if score >= 0.5 else real.negative_class,
                "score": round(float(score), 6),
                "predicted_at": (start + timedelta(minutes=i)).isoformat(),
            }
        )
    return items


@pytest.fixture
def explained(request, register, ingest, ml_engineer, domain_expert):
    """Register the real model, record its decisions, explain them as the workers do.

    Returns the version and its decision ids.
    """
    real: RealModel = request.getfixturevalue(request.param)
    version = register(
        ml_engineer,
        name=real.name,
        artifact=real.artifact,
        schema=real.schema,
        background=real.background,
    )
    assign_models(domain_expert, [real.name])
    ids = [r["id"] for r in ingest(*payloads(real))]
    tasks.run_batch(version.pk, "shap", ids)
    tasks.run_batch(version.pk, "lime", ids)
    return version, ids


def agreement_cases() -> dict[int, dict]:
    """The METHODS_DISAGREE reason of every unresolved case that has one, by decision."""
    return {
        case.decision_id: reason
        for case in ReviewCase.objects.unresolved()
        for reason in case.reasons
        if reason["rule"] == rules.METHODS_DISAGREE
    }


@pytest.mark.xfail(
    strict=True,
    reason="issue: the SHAP-LIME rule opens cases on ~20 % (demo) and ~40 % (Adult) of decisions",
)
@pytest.mark.parametrize("explained", ["demo_model", "adult_model"], indirect=True)
def test_the_agreement_rule_opens_cases_on_a_small_share_of_real_decisions(explained):
    version, ids = explained
    lime = {
        e.decision_id: e.quality
        for e in Explanation.objects.filter(decision_id__in=ids, method="lime", status="done")
    }
    assert len(lime) == DECISIONS
    cases = agreement_cases()

    share = len(cases) / DECISIONS
    assert share <= SMALL_SHARE, (
        f"{len(cases)} of {DECISIONS} decisions ({share:.0%}) opened a SHAP-LIME case; "
        f"{sum(lime[d]['fidelity_r2'] < 0.5 for d in cases)} of them with LIME fidelity R² < 0.5"
    )
    settings = rules.agreement_settings(version.explain_settings)
    for decision_id, quality in lime.items():
        agreement = quality["agreement_with_shap"]
        judged = quality["fidelity_r2"] >= settings["min_fidelity"]
        assert agreement["judged"] is judged
        if not judged:
            # Not judged, and the figures say why.
            assert decision_id not in cases
            assert f"R² {quality['fidelity_r2']:.2f}" in agreement["why"]
    for decision_id, reason in cases.items():
        # Every case names the figures that opened it.
        agreement = lime[decision_id]["agreement_with_shap"]
        shared = round(agreement["top_k_overlap"] * agreement["top_k"])
        assert f"{shared} of the top {agreement['top_k']} shared" in reason["detail"]
        if agreement["rank_correlation"] is not None and not math.isnan(
            agreement["rank_correlation"]
        ):
            assert f"rank correlation {agreement['rank_correlation']:.2f}" in reason["detail"]
        assert f"R² {lime[decision_id]['fidelity_r2']:.2f}" in reason["detail"]
