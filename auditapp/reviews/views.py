"""The review queue page and the case actions of the decision page."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import QueryDict
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.errors import Conflict, InvalidInput, NotFound
from auditapp.pages import page, paginate, takes_lists, takes_query
from auditapp.registry.lookups import refuse_unseen_model_filter
from auditapp.reviews import services
from auditapp.reviews.api import labelled_download
from auditapp.reviews.models import ReviewCase

QUEUE_PAGE = 50  # cases per page unless ?limit= says otherwise
# What the queue page takes: services.queue_cases's filters and order, the page and its size.
QUEUE_PARAMETERS = (*services.QUEUE_FILTERS, "page", "limit")


def _case_for(actor, case_id: int) -> ReviewCase:
    actor.require(roles.READ_DECISIONS)
    case = ReviewCase.objects.visible_to(actor).select_related("decision").filter(pk=case_id)
    if not case:
        raise NotFound(f"No review case {case_id}.")
    return case[0]


def age_text(delta: timedelta) -> str:
    """A case's age as people say it: "40 min", "3 h", "2 d"."""
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} d"


def _queue_context(actor, params) -> dict:
    pager = paginate(services.queue_cases(actor, params), params, per_page=QUEUE_PAGE)
    if not pager.rows:
        refuse_unseen_model_filter(actor, params)
    now = timezone.now()
    for case in pager.rows:
        case.age = age_text(now - case.opened_at)
        case.rules = [label for label, _ in case.reason_texts()]
    return {
        "cases": pager.rows,
        "pager": pager,
        "params": params,
        "show": params.get("show") or "open",
        "order": params.get("order") or "priority",
        "orders": services.QUEUE_ORDER_LABELS,
        "models": services.queue_models(actor),
        "can_work": actor.can(roles.WORK_REVIEWS),
        "query": pager.query(pager.number),
    }


@login_required
@page
@takes_query(*QUEUE_PARAMETERS)
def queue(request):
    """The cases to review, by priority unless ?order= says otherwise, a page at a time."""
    actor = roles.actor_for(request)
    return render(request, "reviews/queue.html", _queue_context(actor, request.GET))


@login_required
@require_POST
@page
@takes_lists("case")
def take_selected(request):
    """Take the cases ticked on the queue page (all or none), then back to the same page."""
    actor = roles.actor_for(request)
    params = QueryDict(request.POST.get("query", ""))
    try:
        taken = services.take_cases(actor, request.POST.getlist("case"), ip=client_ip(request))
    except (Conflict, InvalidInput) as exc:
        context = {**_queue_context(actor, params), "error": exc}
        return render(request, "reviews/queue.html", context, status=exc.status)
    ids = ", ".join(str(case.pk) for case in taken)
    messages.success(
        request,
        f"You took {len(taken)} case{pluralize(len(taken))}: {ids}." if taken else "Nothing new.",
    )
    query = params.urlencode()
    return redirect(f"{reverse('review-queue')}?{query}" if query else reverse("review-queue"))


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
