"""The engine runs without the project: no auditapp, Django or Celery in the process.

A fresh interpreter is the only honest check: this one has Django loaded already.
"""

from __future__ import annotations

import os

from tests.workers import python_json

# Fits a tiny model, explains two rows with SHAP, and reports what got loaded.
SCRIPT = """
import json, sys

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from explain import backends, counterfactual, engine, features, lime_backend, schema, shap_backend

spec = schema.parse_schema({
    "features": [{"name": "x", "type": "numeric"}, {"name": "y", "type": "numeric"}],
    "target": {"type": "classification", "classes": [0, 1]},
})
frame = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 2)), columns=["x", "y"])
model = LogisticRegression().fit(frame, (frame.x + 2 * frame.y > 0).astype(int))
context = engine.ModelContext(model, spec, frame, "b" * 64, "a" * 64)
rows = frame.head(2).to_dict("records")
results = engine.explain(context, backends.backend("shap"), rows, [0, 0])
adverse = frame[model.predict(frame) == 1].head(1).to_dict("records")[0]
found = counterfactual.counterfactuals(context, adverse, seed=0)
print(json.dumps({
    "modules": sorted(sys.modules),
    "errors": [r.error for r in results],
    "totals": [r.base_value + sum(r.attributions.values()) for r in results],
    "log_odds": model.decision_function(frame.head(2)).tolist(),
    "additivity_ok": [r.quality["additivity_ok"] for r in results],
    "counterfactual": [found.error, [model.predict(pd.DataFrame([c.inputs]))[0].item()
                                     for c in found.counterfactuals]],
}))
"""


def run_engine_alone() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return python_json(SCRIPT, env)


def test_the_engine_explains_with_no_project_django_or_celery_loaded():
    report = run_engine_alone()

    loaded = [
        name for name in report["modules"] if name.split(".")[0] in ("auditapp", "django", "celery")
    ]
    assert loaded == []
    assert report["errors"] == ["", ""]
    assert report["additivity_ok"] == [True, True]
    error, predictions = report["counterfactual"]
    assert error == "" and predictions and set(predictions) == {0}  # flipped to the other class
    for total, log_odds in zip(report["totals"], report["log_odds"], strict=True):
        assert abs(total - log_odds) < 1e-9
