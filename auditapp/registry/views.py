"""Model pages: the registry list and one version's card, history and figures."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Prefetch
from django.shortcuts import render

from auditapp.accounts import roles
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.registry.stats import version_statistics
from auditapp.reviews.stats import oversight_figures
from auditapp.web import charts
from auditapp.web.pages import page


@login_required
@page
def model_list(request):
    actor = roles.actor_for(request)
    actor.require(roles.READ_MODELS)
    versions = ModelVersion.objects.annotate(decision_count=Count("decisions")).order_by(
        "-created_at"
    )
    models = (
        RegisteredModel.objects.visible_to(actor)
        .select_related("owner")
        .prefetch_related(Prefetch("versions", queryset=versions))
    )
    return render(request, "registry/model_list.html", {"models": models})


@login_required
@page
def version_detail(request, name: str, version: str):
    actor = roles.actor_for(request)
    model_version = roles.get_version_for_actor(actor, name, version)
    schema = model_version.parsed_schema
    labels = {f.name: f.label for f in schema.features}
    stats = version_statistics(model_version)
    figures = {
        "importance": charts.bar_chart(
            [(labels[n], v) for n, v in stats.importance],
            title="Global importance: mean |SHAP| per feature",
            value_label="mean |SHAP|",
            signed=False,
        ),
        "spread": charts.strip_plot(
            [(labels[n], values) for n, values in stats.spread],
            title="Spread of SHAP attributions per feature",
            x_label="SHAP attribution",
        ),
        "scores": charts.histogram(
            stats.score_counts,
            stats.score_edges,
            title="Score distribution",
            x_label=f"score (probability of {schema.target.positive_class})",
        ),
        "per_day": charts.time_series(
            stats.per_day, title="Decisions per day", y_label="decisions"
        ),
    }
    context = {
        "oversight": oversight_figures(model_version),
        "can_export_labelled": actor.can(roles.EXPORT_TRAINING_DATA),
        "model_version": model_version,
        "schema": schema,
        "stats": stats,
        "figures": figures,
        "stage_history": model_version.stage_changes.select_related("changed_by"),
        "versions": model_version.registered_model.versions.order_by("-created_at"),
    }
    return render(request, "registry/version_detail.html", context)
