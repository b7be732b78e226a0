"""A model version's page: its schema, card and history beside what it decided, how
those decisions were explained and how people reviewed them.

It composes the registry, decisions, explanations and reviews, so it lives
above them all, beside the compliance report that sums up the same figures.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from auditapp import charts
from auditapp.accounts import roles
from auditapp.approvals.models import PENDING
from auditapp.approvals.services import approvals_for_actor, stage_history
from auditapp.decisions.reasons import protected_input_warning
from auditapp.pages import page
from auditapp.registry.lookups import get_version_for_actor
from auditapp.reports.version_stats import version_statistics
from auditapp.reviews.stats import oversight_figures


@login_required
@page
def version_detail(request, name: str, version: str):
    actor = roles.actor_for(request)
    model_version = get_version_for_actor(actor, name, version)
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
        "oversight": oversight_figures(model_version, decisions=stats.decisions),
        "can_export_labelled": actor.can(roles.EXPORT_TRAINING_DATA),
        "can_change_stage": actor.can(roles.CHANGE_STAGE),
        "model_version": model_version,
        "schema": schema,
        "protected_input_warning": protected_input_warning(schema),
        "stats": stats,
        "figures": figures,
        "stage_history": stage_history(model_version),
        "pending_approvals": list(
            approvals_for_actor(actor, PENDING).filter(
                registered_model_id=model_version.registered_model_id
            )
        ),
        "versions": model_version.registered_model.versions.order_by("-created_at"),
    }
    return render(request, "registry/version_detail.html", context)
