"""The champion and challenger page (`/models/<name>/compare/?a=3&b=4`) and its promote
button (for those who may change stages)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from auditapp import charts
from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.pages import page, takes_query
from auditapp.serving import compare, services


@login_required
@page
@takes_query("a", "b")
def compare_versions(request, name: str):
    actor = roles.actor_for(request)
    model = services.model_for(actor, name, roles.READ_MODELS)
    a, b = compare.versions_to_compare(model, request.GET.get("a"), request.GET.get("b"))
    comparison = compare.compare(a, b)
    difference = comparison.score_difference
    chart = (
        charts.histogram(
            difference["counts"],
            difference["edges"],
            title=f"Score of version {b.version} minus version {a.version}, per pair",
            x_label="score difference",
            y_label="pairs",
        )
        if difference
        else None
    )
    context = {
        "model": model,
        "a": a,
        "b": b,
        "comparison": comparison,
        "chart": chart,
        "fairness": _fairness_rows(comparison),
        "may_promote": actor.can(roles.CHANGE_STAGE),
    }
    return render(request, "serving/compare.html", context)


def _fairness_rows(comparison: compare.Comparison) -> list[dict]:
    """Per protected feature and group: each version's selection rate on the same people."""
    rows = []
    a, b = comparison.fairness.get("a") or {}, comparison.fairness.get("b") or {}
    for feature, figures in a.items():
        other = b.get(feature) or {}
        rates_b = other.get("selection_rate", {}) if isinstance(other, dict) else {}
        for group, rate in (figures.get("selection_rate") or {}).items():
            rows.append({"feature": feature, "group": group, "a": rate, "b": rates_b.get(group)})
    return rows


@login_required
@require_POST
@page
def promote(request, name: str):
    actor = roles.actor_for(request)
    model = services.model_for(actor, name, roles.CHANGE_STAGE)
    a, b = compare.versions_to_compare(model, request.POST.get("a"), request.POST.get("b"))
    approval = compare.promote(actor, model, b, ip=client_ip(request))
    if approval is not None:
        messages.info(
            request,
            f"Four-eyes: promoting v{b.version} waits for a second person's approval "
            f"(approval {approval.pk}, on the Approvals page).",
        )
        return redirect(f"/models/{model.name}/compare/?a={a.version}&b={b.version}")
    return redirect(f"/models/{model.name}/compare/?a={b.version}&b={a.version}")
