"""What an app beside explain (monitoring) needs from it, without importing its sibling:
explain registers these in its AppConfig.ready(), one floor below both, as dotted paths
that are imported at their first call (they load the model's libraries: seconds that a
process which never calls them should not pay at start-up).

- `background_frame(model_version)`: the version's background sample, as the model sees it.
- `background_figures(model_version, shap_rows)`: the model's scores and predictions on
  that sample, and the SHAP attributions of its first `shap_rows` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from django.utils.module_loading import import_string

_hooks: dict[str, str] = {}
NAMES = ("background_frame", "background_figures")


def register(**paths: str) -> None:
    """Each hook by the dotted path of its function."""
    unknown = set(paths) - set(NAMES)
    if unknown:
        raise TypeError(f"unknown explanation hooks {sorted(unknown)}; known: {NAMES}")
    _hooks.update(paths)
    _hook.cache_clear()


@cache
def _hook(name: str) -> Callable[..., Any]:
    try:
        path = _hooks[name]
    except KeyError:
        raise RuntimeError(f"no {name} registered: is the explain app installed?") from None
    function: Callable[..., Any] = import_string(path)
    return function


def background_frame(model_version: Any) -> Any:
    return _hook("background_frame")(model_version)


def background_figures(model_version: Any, shap_rows: int) -> dict:
    """{"scores", "predictions", "attributions"} (attributions of the rows SHAP explained)."""
    return _hook("background_figures")(model_version, shap_rows)
