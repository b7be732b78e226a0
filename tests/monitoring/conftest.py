"""A German-credit model registered through the real service, and streams of its decisions.

The model is trained once per session on the first 700 applicants; its background
sample (the monitoring reference) is applicants 0-299; the streams replay
applicants 700-999, as they are (no drift) or with credit amounts and ages shifted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from auditapp.accounts import roles
from auditapp.decisions.models import Decision
from auditapp.decisions.outcomes import record_outcomes
from auditapp.decisions.services import record_decisions
from auditapp.monitoring.windows import window_floor
from auditapp.registry.services import VersionUpload, register_model_version
from tests.datasets import GERMAN_CATEGORICAL, GERMAN_NUMERIC, german_credit, german_schema

FEATURES = GERMAN_CATEGORICAL + GERMAN_NUMERIC
GERMAN = "german"


def a_day(days_ago: int) -> datetime:
    """The start (UTC) of the day `days_ago` days before today."""
    return window_floor("day", datetime.now(UTC)) - timedelta(days=days_ago)


def shifted(frame: pd.DataFrame) -> pd.DataFrame:
    """Larger loans to older applicants: the drift the tests must catch."""
    frame = frame.copy()
    frame["credit_amount"] = frame["credit_amount"] * 2 + 2000
    frame["age"] = frame["age"] + 15
    return frame


def plain(value):
    return value.item() if hasattr(value, "item") else value


@pytest.fixture(scope="session")
def german_pipeline():
    frame = german_credit()
    prep = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), GERMAN_CATEGORICAL),
            ("numeric", "passthrough", GERMAN_NUMERIC),
        ]
    )
    model = GradientBoostingClassifier(n_estimators=30, max_depth=2, random_state=0)
    pipeline = Pipeline([("prep", prep), ("model", model)])
    return pipeline.fit(frame[FEATURES].iloc[:700], frame["credit"].iloc[:700])


@pytest.fixture(scope="session")
def german_artifact(german_pipeline) -> bytes:
    return skops.io.dumps(german_pipeline)


@pytest.fixture
def german_version(ml_engineer, domain_expert, german_artifact):
    """german v1, registered by the ML engineer (assigned to it as its registrant)."""
    background = german_credit()[FEATURES].iloc[:300].to_csv(index=False).encode()
    upload = VersionUpload(
        name=GERMAN,
        version="1",
        artifact=german_artifact,
        artifact_format="skops",
        schema=german_schema(),
        background=background,
        card={"description": "German credit (test)", "metrics": {"roc_auc": 0.78}},
    )
    return register_model_version(roles.Actor(user=ml_engineer), upload)


@pytest.fixture
def stream(german_version, german_pipeline, ml_engineer):
    """Record German-credit applicants as decisions of `german_version` on one day."""

    def record(frame: pd.DataFrame, day: datetime, tag: str) -> list[Decision]:
        features = frame[FEATURES]
        scores = german_pipeline.predict_proba(features)[
            :, list(german_pipeline.classes_).index("bad")
        ]
        spacing = timedelta(days=1) / (len(frame) + 1)
        items = [
            {
                "model": GERMAN,
                "version": "1",
                "request_id": f"{tag}-{i}",
                "inputs": {k: plain(v) for k, v in row.items()},
                "prediction": "bad" if score >= 0.5 else "good",
                "score": float(score),
                "predicted_at": (day + spacing * (i + 1)).isoformat(),
            }
            for i, (row, score) in enumerate(
                zip(features.to_dict(orient="records"), scores, strict=True)
            )
        ]
        results = record_decisions(roles.Actor(user=ml_engineer), {"decisions": items})
        ids = [r["id"] for r in results]
        return list(Decision.objects.filter(pk__in=ids).order_by("pk"))

    return record


@pytest.fixture
def outcomes(ml_engineer):
    """Record the true labels of decisions (as outcomes) through the real service."""

    def record(decisions: list[Decision], labels) -> None:
        items = [
            {
                "decision_id": d.pk,
                "model": d.registered_model.name,
                "outcome": plain(label),
                "observed_at": (d.predicted_at + timedelta(hours=1)).isoformat(),
            }
            for d, label in zip(decisions, labels, strict=True)
        ]
        record_outcomes(roles.Actor(user=ml_engineer), {"outcomes": items})

    return record


@pytest.fixture
def unseen():
    """The later applicants, unseen in training and in the reference."""
    return german_credit().iloc[700:].reset_index(drop=True)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
