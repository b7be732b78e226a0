"""Snapshot documents as dataclasses: what metrics.py stores comes back key for key (the
API's contract), and documents written before a key existed still load, with defaults."""

from __future__ import annotations

import json
from datetime import timedelta

from auditapp.monitoring import metrics
from auditapp.monitoring.documents import (
    CategoricalDrift,
    ClassificationPerformance,
    NumericDrift,
    RegressionPerformance,
    SnapshotDocument,
)
from explain import tasks as explain_tasks
from tests.monitoring.conftest import a_day, shifted

REGRESSION = {
    "decisions": 2,
    "reference": {"kind": "period", "description": "decisions from a to b", "rows": 40},
    "drift": {
        "income": {
            "type": "numeric",
            "psi": 0.01,
            "ks_p": 0.9,
            "ks_statistic": 0.1,
            "drifted": False,
            "reference_mean": 10.0,
            "current_mean": 10.5,
            "missing": 0,
        },
        "region": {"type": "categorical", "psi": None, "chi2_p": None, "drifted": False},
    },
    "score_drift": {
        "psi": None,
        "ks_p": None,
        "ks_statistic": None,
        "drifted": False,
        "reference_mean": None,
        "current_mean": None,
        "missing": 2,
        "current": {"n": 0},
        "reference": {"n": 3, "mean": 0.5, "p10": 0.1, "median": 0.5, "p90": 0.9},
    },
    "prediction_drift": {
        "psi": 0.3,
        "ks_p": 0.01,
        "ks_statistic": 0.6,
        "drifted": True,
        "reference_mean": 1.0,
        "current_mean": 2.0,
        "missing": 0,
    },
    "attribution_drift": {"explained": 0, "mean_abs_shap": {}, "ranking_ndcg": None},
    "performance": {"outcomes": 1, "mae": 0.5, "rmse": 0.5, "r2": None},
    "fairness": {},
    "explanations": {"pending": 2, "running": 0, "done": 0, "failed": 0, "failure_rate": None},
}


def same_bytes(document: dict) -> bool:
    again = SnapshotDocument.from_document(document).as_document()
    return json.dumps(again) == json.dumps(document)  # key order included


def test_a_computed_document_comes_back_key_for_key(german_version, stream, outcomes, unseen):
    day = a_day(3)
    decisions = stream(shifted(unseen), day, "shifted")
    explain_tasks.explain_batch.run(german_version.pk, "shap", [d.pk for d in decisions[:50]])
    outcomes(decisions[:200], unseen["credit"].iloc[:200])
    stored = metrics.compute_window_metrics(german_version, day, day + timedelta(days=1))

    document = SnapshotDocument.from_document(stored)

    assert same_bytes(stored)
    assert isinstance(document.drift["age"], NumericDrift) and document.drift["age"].drifted
    assert isinstance(document.drift["purpose"], CategoricalDrift)
    assert isinstance(document.performance, ClassificationPerformance)
    assert document.performance_figure("roc_auc") == stored["performance"]["roc_auc"]
    assert document.score_psi == stored["score_drift"]["psi"]
    assert document.fairness and all(
        e.four_fifths_ok is not None for e in document.fairness.values()
    )


def test_a_regression_document_comes_back_key_for_key():
    document = SnapshotDocument.from_document(REGRESSION)

    assert same_bytes(REGRESSION)
    assert isinstance(document.performance, RegressionPerformance)
    assert document.performance_figure("roc_auc") is None  # a regressor has none
    assert isinstance(document.prediction_drift, NumericDrift)
    assert document.median_score is None


def test_a_pending_snapshot_has_every_section_empty():
    document = SnapshotDocument.from_document({}).as_document()

    assert document == {
        "decisions": 0,
        "reference": None,
        "drift": {},
        "score_drift": {},
        "prediction_drift": {},
        "attribution_drift": {},
        "performance": None,
        "fairness": {},
        "explanations": {},
    }


def test_an_older_document_loads_with_defaults_for_what_it_lacks():
    older = {
        "decisions": 5,
        "drift": {"age": {"type": "numeric", "psi": 0.4, "ks_p": 0.001, "drifted": True}},
        "fairness": {
            "sex": {"selection_rate": {"f": 0.4, "m": 0.6}, "disparate_impact_ratio": 0.67}
        },
        "performance": {"outcomes": 5, "accuracy": 0.8},
    }

    document = SnapshotDocument.from_document(older)

    assert document.drift["age"].missing == 0 and document.drift["age"].reference_mean is None
    assert document.fairness["sex"].four_fifths_ok is None
    assert document.disparate_impact("sex") == 0.67
    assert document.performance_figure("roc_auc") is None
    assert document.failure_rate is None and document.ranking_ndcg is None
    assert document.attribution_drift is None and document.as_document()["attribution_drift"] == {}
