"""Independent references the tests compare Attest's numbers with, computed here from the
libraries themselves, never through Attest's engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import shap


def tree_shap_by_feature(pipeline, frame: pd.DataFrame, names: list[str]) -> tuple[dict, float]:
    """shap.TreeExplainer on the pipeline's own transformed row: each raw feature's
    attribution to the final estimator's margin for classes_[1] (one-hot columns summed
    back by name), and the base value."""
    prep, estimator = pipeline[:-1], pipeline[-1]
    transformed = prep.transform(frame)
    transformed = transformed.toarray() if hasattr(transformed, "toarray") else transformed
    explainer = shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent")
    values = explainer.shap_values(transformed)
    values = np.asarray(values[1] if isinstance(values, list) else values).reshape(-1)
    base = float(np.asarray(explainer.expected_value).reshape(-1)[-1])
    per_feature = dict.fromkeys(names, 0.0)
    for column, value in zip(prep.get_feature_names_out(), values, strict=True):
        kind, rest = column.split("__", 1)
        name = (
            rest
            if kind == "remainder"
            else max((n for n in names if rest.startswith(n + "_")), key=len)
        )
        per_feature[name] += float(value)
    return per_feature, base
