"""The privacy page (/privacy/): subject requests and legal holds, for compliance officers
and admins (who file and place them) and auditors (who read them)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions import holds
from auditapp.errors import InvalidInput
from auditapp.pages import page
from auditapp.reports import subjects
from auditapp.reports.subjects_api import access_report_response

LISTED = 100


@login_required
@page
def privacy(request):
    """GET: the latest requests and holds; POST: file a request or place a hold."""
    actor = roles.actor_for(request)
    actor.require(roles.READ_SUBJECT_REQUESTS)
    errors, status, filed = None, 200, None
    if request.method == "POST":
        try:
            if request.POST.get("action") == "hold":
                holds.place_hold(actor, _hold_form(request.POST), ip=client_ip(request), via="page")
                return redirect("privacy")
            filed = subjects.file_subject_request(
                actor,
                {k: request.POST.get(k, "") for k in ("subject_ref", "kind", "reason")},
                ip=client_ip(request),
                via="page",
            )
        except InvalidInput as exc:
            errors, status = exc.details or {"request": [exc.message]}, 400
    context = {
        "requests": list(subjects.visible_requests(actor)[:LISTED]),
        "holds": list(holds.visible_holds(actor)[:LISTED])
        if actor.can(roles.READ_LEGAL_HOLDS)
        else [],
        "can_file": actor.can(roles.FILE_SUBJECT_REQUESTS),
        "can_hold": actor.can(roles.MANAGE_LEGAL_HOLDS),
        "filed": filed,
        "form": request.POST if errors else {},
        "errors": errors,
    }
    return render(request, "reports/privacy.html", context, status=status)


def _hold_form(post) -> dict:
    return {
        "model": post.get("model") or None,
        "from": (post.get("from") + "T00:00:00Z") if post.get("from") else None,
        "to": (post.get("to") + "T00:00:00Z") if post.get("to") else None,
        "subject_ref": post.get("subject_ref") or None,
        "reason": post.get("reason", ""),
    }


@login_required
@require_POST
@page
def release_hold(request, hold_id: int):
    actor = roles.actor_for(request)
    holds.get_hold_for_actor(actor, hold_id)
    holds.release_hold(
        actor,
        hold_id,
        {"reason": request.POST.get("reason", "")},
        ip=client_ip(request),
        via="page",
    )
    return redirect("privacy")


@login_required
@page
def access_report(request, request_id: int, fmt: str):
    return access_report_response(request, request_id, fmt, via="page")
