"""Pages. Thin: ask roles, query, render."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render

from auditapp.accounts import roles
from auditapp.decisions.models import Decision
from auditapp.pages import error_page
from auditapp.replicas import replica_view
from auditapp.web.api_errors import error_body, record_denial
from auditapp.web.overview import overview_for, start_of_today


@login_required
@replica_view
def overview(request):
    """What needs the signed-in person today (web/overview.py), and the latest decisions."""
    actor = roles.actor_for(request)
    recent = []
    if actor.can(roles.READ_DECISIONS):
        # The newest recorded: ids grow as decisions are recorded, and the primary key's
        # index gives that order (no index holds recorded_at: a sort of every decision).
        recent = Decision.objects.visible_to(actor).with_related().order_by("-id")[:10]
    context = {
        "overview": overview_for(actor),
        "today": start_of_today(),
        "recent": recent,
        "can_read_decisions": actor.can(roles.READ_DECISIONS),
    }
    return render(request, "web/overview.html", context)


def forbidden(request, exception=None):
    message = str(exception) if exception else "You do not have permission to see this."
    if request.user.is_authenticated:
        record_denial(request, message)
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("forbidden", message), status=403)
    return error_page(request, 403, message)


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return error_page(request, 404, "Not found.")
