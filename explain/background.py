"""The model's figures on a version's background sample, which monitoring compares windows
against: registered as explanation hooks (auditapp/decisions/explanation_hooks.py) by
ExplainConfig.ready(), since monitoring may not import explain."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from explain import engine
from explain.backends import backend
from explain.explainers import cached_explainer


def background_frame(model_version) -> pd.DataFrame:
    context, _ = cached_explainer(model_version, "shap")
    return context.background


def background_figures(model_version, shap_rows: int) -> dict:
    """The model's own scores and predictions on the background, and SHAP of its first rows."""
    context, explainer = cached_explainer(model_version, "shap")
    frame = context.background
    predictions = [_plain(p) for p in context.model.predict(frame)]
    if context.is_classifier:
        scores = context.model.predict_proba(frame)[:, context.positive_index()].tolist()
    else:
        scores = [float(p) for p in predictions]
    rows = _records(frame.head(shap_rows))
    results = engine.explain(
        context, backend("shap"), rows, [0] * len(rows), {"explainer": explainer}
    )
    return {
        "scores": scores,
        "predictions": predictions,
        "attributions": [r.attributions for r in results if r.ok],
    }


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value
