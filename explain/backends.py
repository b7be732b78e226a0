"""The explanation methods by name: the one place that knows which backends exist.

The backends import the engine's types; the engine knows none of them, so the
caller picks one here and hands it to `engine.explain`.
"""

from __future__ import annotations

from explain import lime_backend, shap_backend
from explain.engine import Backend

BACKENDS = {
    "shap": Backend("shap", shap_backend.ShapExplainer, shap_backend.explain_rows),
    "lime": Backend("lime", lime_backend.LimeExplainer, lime_backend.explain_rows),
}


def backend(method: str) -> Backend:
    """The backend of an explanation method; ValueError for a method there is none of."""
    if method not in BACKENDS:
        raise ValueError(f"unknown explanation method {method!r}; known: {sorted(BACKENDS)}")
    return BACKENDS[method]
