"""A per-process cache of model contexts and explainers, keyed by the artifact's sha256.

Loading a model and building its explainer costs more than explaining a batch:
a worker keeps the last CACHE_SIZE versions it served.
"""

from __future__ import annotations

from collections import OrderedDict

from auditapp.registry.artifacts import sha256_hex
from auditapp.registry.services import load_model, parse_background
from explain import counterfactual, engine, selftest
from explain.backends import backend

CACHE_SIZE = 8

_contexts: OrderedDict[tuple, tuple[engine.ModelContext, dict]] = OrderedDict()


def _load_context(model_version) -> engine.ModelContext:
    schema = model_version.parsed_schema
    background = None
    if model_version.background:
        with model_version.background.open("rb") as handle:
            data = handle.read()
        if sha256_hex(data) != model_version.background_sha256:
            raise ValueError("the background sample changed after registration; refusing it")
        background = schema.frame(parse_background(data, schema))
    return engine.ModelContext(
        model=load_model(model_version),
        schema=schema,
        background=background,
        background_sha256=model_version.background_sha256,
        artifact_sha256=model_version.artifact_sha256,
    )


def _cached_context(model_version) -> tuple[engine.ModelContext, dict]:
    key = (
        model_version.artifact_sha256,
        model_version.background_sha256,
        model_version.schema_sha256,
    )
    if key in _contexts:
        _contexts.move_to_end(key)
    else:
        _contexts[key] = (_load_context(model_version), {})
        while len(_contexts) > CACHE_SIZE:
            _contexts.popitem(last=False)
    return _contexts[key]


def cached_context(model_version) -> engine.ModelContext:
    """A version's loaded model (sha256 checked, trusted types only: registry.artifacts) with
    its schema and background, from the same per-process LRU cache (serving runs it)."""
    return _cached_context(model_version)[0]


def cached_explainer(model_version, method: str, options: dict | None = None):
    """(context, explainer) for a version, from a bounded per-process LRU cache."""
    context, explainers = _cached_context(model_version)
    if options is None and method == "shap":
        options = selftest.shap_options(model_version.self_test)
    option_key = (method, tuple(sorted((options or {}).items())))
    if option_key not in explainers:
        explainers[option_key] = _build_explainer(context, method, options or {})
    return context, explainers[option_key]


def _build_explainer(context, method: str, options: dict):
    return backend(method).explainer(context, options)


def cached_search(model_version) -> counterfactual.CounterfactualSearch:
    """A version's counterfactual search (background spreads, its favourable rows), built
    once per process beside its explainers."""
    context, explainers = _cached_context(model_version)
    if ("counterfactual",) not in explainers:
        explainers[("counterfactual",)] = counterfactual.search_for(context)
    return explainers[("counterfactual",)]
