"""The explanation methods by name: the one place that knows which backends exist.

The backends import the engine's types; the engine knows none of them, so the
caller picks one here and hands it to `engine.explain`. Each backend's module
(with shap or lime, and scikit-learn behind them: seconds to import) is loaded the
first time its method is asked for, so a process that explains nothing (a web
process, `manage.py verify_proof`) never pays for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from explain.engine import Backend

if TYPE_CHECKING:
    import pandas as pd

    from explain.lime_backend import LimeRules
    from explain.schema import Schema

MODULES = {"shap": "explain.shap_backend", "lime": "explain.lime_backend"}


def backend(method: str) -> Backend:
    """The backend of an explanation method; ValueError for a method there is none of."""
    if method not in MODULES:
        raise ValueError(f"unknown explanation method {method!r}; known: {sorted(MODULES)}")
    found: Backend = importlib.import_module(MODULES[method]).BACKEND
    return found


def lime_rules(schema: Schema, background: pd.DataFrame) -> LimeRules:
    """LIME's rules over a version's background (explain.lime_backend.LimeRules): a page
    that shows a LIME result derives them, and loads LIME's module only then."""
    rules: LimeRules = importlib.import_module(MODULES["lime"]).LimeRules(schema, background)
    return rules
