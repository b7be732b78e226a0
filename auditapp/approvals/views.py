"""The approvals page: the requests the viewer can decide, their own, and recent decisions."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.approvals import services
from auditapp.approvals.models import PENDING
from auditapp.errors import ServiceError
from auditapp.pages import page

RECENT = 50  # decided or expired approvals shown below the pending ones


@login_required
@page
def approval_list(request):
    actor = roles.actor_for(request)
    return render(request, "approvals/list.html", _context(actor))


def _context(actor: roles.Actor, error: ServiceError | None = None) -> dict:
    pending = list(services.approvals_for_actor(actor, PENDING))
    for approval in pending:
        approval.can_decide = services.may_decide(actor, approval)
    mine = [a for a in pending if a.requested_by_id == actor.user.pk]
    return {
        "to_decide": [a for a in pending if a.can_decide],
        "mine": mine,
        "recent": list(services.approvals_for_actor(actor).exclude(state=PENDING)[:RECENT]),
        "error": error,
    }


@login_required
@require_POST
@page
def decide(request, approval_id: int, action: str):
    """The approve and reject buttons: POST /approvals/<id>/approve or /reject."""
    actor = roles.actor_for(request)
    decisions = {"approve": services.approve, "reject": services.reject}
    if action not in decisions:
        raise Http404("No such action.")
    decide_by = decisions[action]
    try:
        approval = decide_by(
            actor, approval_id, request.POST.get("comment", ""), ip=client_ip(request)
        )
    except ServiceError as exc:
        if exc.status not in (400, 409):
            raise
        return render(request, "approvals/list.html", _context(actor, exc), status=exc.status)
    messages.success(request, f"Approval {approval.pk} {approval.state}: {approval.summary}.")
    return redirect("approval-list")
