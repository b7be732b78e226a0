"""The search page's form: the models an actor may search, and the chosen model's filters.

What depends on the model (its versions, its classes, its features and their categories
and units) is one fieldset, `templates/decisions/_filters.html`: the page renders it
with the rest of the form, and `/decisions/filters` renders it alone when the model
select changes (htmx), from the same function, so a reload shows the same filters.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditapp.accounts import roles
from auditapp.dossier.filters import sensitive_anywhere
from auditapp.registry.models import ModelVersion, RegisteredModel


@dataclass(frozen=True)
class Choice:
    """One option of a select; `tone` colours a class ("adverse", "favourable")."""

    value: str
    text: str
    selected: bool = False
    tone: str = ""


def _choices(options: list[tuple[str, str, str]], chosen: str, fitting: bool) -> list[Choice]:
    """Options as Choices, `chosen` selected. A chosen value that is not an option is one
    of its own, said to be so (the page's results were filtered by it), unless `fitting`:
    then it is dropped (the model changed; the results are searched again without it)."""
    choices = [Choice(value, text, value == chosen, tone) for value, text, tone in options]
    if chosen and not any(c.selected for c in choices) and not fitting:
        choices.append(Choice(chosen, f"{chosen} (not of this model)", True))
    return choices


def search_form(actor: roles.Actor, params, *, fitting: bool = False) -> dict:
    """The form's context: the visible models, and the chosen model's filters with the
    values of `params` selected.

    A model the actor may not see is treated as one that does not exist: no model is
    chosen, and nothing of it shows. `fitting` (the filters asked for alone, when the
    model changes) keeps only the values the model offers.
    """
    models = list(RegisteredModel.objects.visible_to(actor).values_list("name", flat=True))
    model = params.get("model") if params.get("model") in models else None
    context = {
        "models": models,
        "model": model,
        "version": params.get("version", ""),
        "prediction": params.get("prediction", ""),
        "versions": [],
        "classes": [],
        "reasons": [],
        "feature_filters": [],
        "features_open": False,
    }
    if model is None:
        if params.get("top_reason") and not fitting:  # the API's search needs no model
            context["reasons"] = [Choice(params["top_reason"], params["top_reason"], True)]
        return context
    versions = list(
        ModelVersion.objects.filter(registered_model__name=model)
        .order_by("-created_at", "-pk")
        .only("version", "stage", "schema")
    )
    if not versions:
        return context
    schema = versions[0].parsed_schema  # the newest version's, as the feature filters read it
    context["versions"] = _choices(
        [(v.version, f"{v.version} ({v.stage})", "") for v in versions],
        params.get("version", ""),
        fitting,
    )
    target = schema.target
    if target.type == "classification":
        context["classes"] = _choices(
            [(str(c), _class_text(target, c), target.tone(c)) for c in target.classes],
            params.get("prediction", ""),
            fitting,
        )
    # No filter on a feature the actor may not see: the search would refuse it.
    hidden: frozenset[str] = frozenset()
    hidden_reasons: frozenset[str] = frozenset()
    if not actor.can(roles.VIEW_SENSITIVE):
        hidden = frozenset().union(*(v.parsed_schema.sensitive_names for v in versions))
        hidden_reasons = sensitive_anywhere(actor)
    context["reasons"] = _choices(
        [(f.name, f.label, "") for f in schema.features if f.name not in hidden_reasons],
        params.get("top_reason", ""),
        fitting,
    )
    context["feature_filters"] = [
        _feature_filter(f, params, fitting) for f in schema.features if f.name not in hidden
    ]
    context["features_open"] = any(
        ff["value"] or ff["gte"] or ff["lte"] for ff in context["feature_filters"]
    )
    return context


def _class_text(target, value) -> str:
    """ "bad (declined)": the class with what a person is told, when the schema says more."""
    told = target.outcome_text(value)
    return str(value) if told == str(value) else f"{value} ({told})"


def _feature_filter(feature, params, fitting: bool) -> dict:
    name = feature.name
    value = params.get(f"feature.{name}", "")
    bounds = {
        "gte": params.get(f"feature.{name}__gte", ""),
        "lte": params.get(f"feature.{name}__lte", ""),
    }
    if feature.type in ("categorical", "boolean"):
        if feature.type == "boolean":
            options = [("true", "yes", ""), ("false", "no", "")]
            value = value.lower() if value.lower() in ("true", "false") else value
        else:
            options = [(c, c, "") for c in feature.categories]
        return {
            "feature": feature,
            "choices": _choices(options, value, fitting),
            "value": value if not fitting or value in {o[0] for o in options} else "",
            "gte": "",
            "lte": "",
        }
    if value and not any(bounds.values()):
        # An exact number (feature.age=30, which the API takes) is the range 30 to 30.
        bounds = {"gte": value, "lte": value}
    # Whole numbers step by one; other numbers take any value (a step of the schema's
    # display decimals would make the browser refuse a finer bound, and htmx then
    # silently not send the form).
    step = "1" if feature.type == "integer" else "any"
    return {"feature": feature, "choices": None, "value": "", "step": step, **bounds}
