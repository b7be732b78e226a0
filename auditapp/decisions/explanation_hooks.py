"""What an app beside explain (monitoring) needs from it, without importing its sibling:
explain registers these in its AppConfig.ready(), one floor below both.

- `background_frame(model_version)`: the version's background sample, as the model sees it.
- `background_figures(model_version, shap_rows)`: the model's scores and predictions on
  that sample, and the SHAP attributions of its first `shap_rows` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_hooks: dict[str, Callable[..., Any]] = {}
NAMES = ("background_frame", "background_figures")


def register(**functions: Callable[..., Any]) -> None:
    unknown = set(functions) - set(NAMES)
    if unknown:
        raise TypeError(f"unknown explanation hooks {sorted(unknown)}; known: {NAMES}")
    _hooks.update(functions)


def _hook(name: str) -> Callable[..., Any]:
    try:
        return _hooks[name]
    except KeyError:
        raise RuntimeError(f"no {name} registered: is the explain app installed?") from None


def background_frame(model_version: Any) -> Any:
    return _hook("background_frame")(model_version)


def background_figures(model_version: Any, shap_rows: int) -> dict:
    """{"scores", "predictions", "attributions"} (attributions of the rows SHAP explained)."""
    return _hook("background_figures")(model_version, shap_rows)
