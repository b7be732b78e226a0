"""The review queue page and the case actions of the decision page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.errors import NotFound
from auditapp.pages import page
from auditapp.registry.models import RegisteredModel
from auditapp.reviews import services
from auditapp.reviews.api import labelled_download
from auditapp.reviews.models import ReviewCase

SHOW = {"open": ["open", "in_review"], "resolved": ["resolved"], "all": None}


def _case_for(actor, case_id: int) -> ReviewCase:
    actor.require(roles.READ_DECISIONS)
    case = ReviewCase.objects.visible_to(actor).select_related("decision").filter(pk=case_id)
    if not case:
        raise NotFound(f"No review case {case_id}.")
    return case[0]


@login_required
@page
def queue(request):
    actor = roles.actor_for(request)
    actor.require(roles.READ_DECISIONS)
    show = request.GET.get("show", "open")
    cases = ReviewCase.objects.visible_to(actor).select_related(
        "decision__registered_model", "decision__model_version", "assignee"
    )
    if SHOW.get(show):
        cases = cases.filter(state__in=SHOW[show])
    if request.GET.get("model"):
        cases = cases.filter(decision__registered_model__name=request.GET["model"])
    if request.GET.get("who") == "mine":
        cases = cases.filter(assignee=request.user)
    elif request.GET.get("who") == "unassigned":
        cases = cases.filter(assignee=None)
    cases = cases.order_by("-opened_at" if request.GET.get("order") == "newest" else "opened_at")
    context = {
        "cases": cases[:200],
        "params": request.GET,
        "show": show,
        "models": RegisteredModel.objects.visible_to(actor).values_list("name", flat=True),
        "can_work": actor.can(roles.WORK_REVIEWS),
    }
    return render(request, "reviews/queue.html", context)


@login_required
@require_POST
@page
def take(request, case_id: int):
    actor = roles.actor_for(request)
    case = _case_for(actor, case_id)
    services.take_case(actor, case, ip=client_ip(request))
    return redirect("decision-detail", decision_id=case.decision_id)


@login_required
@require_POST
@page
def resolve(request, case_id: int):
    actor = roles.actor_for(request)
    case = _case_for(actor, case_id)
    outcome = request.POST.get("outcome") or None
    if outcome is not None:
        outcome = case.decision.model_version.parsed_schema.target.label_from_text(outcome)
    services.resolve_case(
        actor,
        case,
        request.POST.get("resolution", ""),
        outcome=outcome,
        rationale=request.POST.get("rationale", ""),
        ip=client_ip(request),
    )
    return redirect("decision-detail", decision_id=case.decision_id)


@login_required
@require_POST
@page
def flag(request, decision_id: int):
    actor = roles.actor_for(request)
    decision = get_decision_for_actor(actor, decision_id)
    services.flag_decision(actor, decision, request.POST.get("note", ""), ip=client_ip(request))
    return redirect("decision-detail", decision_id=decision_id)


@login_required
@page
def labelled_data(request, name: str, version: str, fmt: str):
    return labelled_download(request, name, version, fmt)
