"""The reports page, its live progress fragment, downloads, and the notice button."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.views.decorators.http import require_POST

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.errors import InvalidInput
from auditapp.pages import page, paginate, takes_query
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.reports import services
from auditapp.reports.api import download_response
from auditapp.reports.models import Report

PAGE_SIZE = 50
# The list's ?order= and ?kind= (both kept in the pager's links).
ORDERS = {"newest": ("-requested_at", "-id"), "oldest": ("requested_at", "id")}
KINDS = {"compliance": Report.COMPLIANCE, "notice": Report.NOTICE}
# What the page takes: the list's order, kind, page and size; the version a link from its
# page names for the form (?model=&version=).
LIST_PARAMETERS = ("order", "kind", "page", "limit", "model", "version")


def _versions(actor) -> list[ModelVersion]:
    return list(
        ModelVersion.objects.filter(registered_model__in=RegisteredModel.objects.visible_to(actor))
        .select_related("registered_model")
        .order_by("registered_model__name", "-created_at")
    )


@login_required
@page
@takes_query(*LIST_PARAMETERS)
def report_list(request):
    """GET: the reports one may see and the request form; POST: request a compliance report."""
    actor = roles.actor_for(request)
    actor.require(roles.EXPORT_REPORTS)
    errors, status = None, 200
    if request.method == "POST":
        try:
            services.request_report(
                actor, _compliance_form(request.POST), ip=client_ip(request), via="page"
            )
        except InvalidInput as exc:
            errors, status = exc.details or {"request": [exc.message]}, 400
        else:
            return redirect("report-list")
    pager = paginate(_listed(actor, request.GET), request.GET, per_page=PAGE_SIZE)
    context = {
        "reports": pager.rows,
        "pager": pager,
        "order": request.GET.get("order") or "newest",
        "kind": request.GET.get("kind", ""),
        "versions": _versions(actor),
        "formats": Report.FORMATS_BY_KIND[Report.COMPLIANCE],
        "form": request.POST if errors else _form_defaults(request.GET),
        "errors": errors,
    }
    return render(request, "reports/list.html", context, status=status)


def _listed(actor, query):
    """The reports the actor may see, of ?kind= (any), in ?order= (newest first)."""
    order, kind = query.get("order") or "newest", query.get("kind") or ""
    problems = {}
    if order not in ORDERS:
        problems["order"] = ["must be newest or oldest"]
    if kind and kind not in KINDS:
        problems["kind"] = ["must be compliance or notice"]
    if problems:
        raise InvalidInput("Some list parameters are invalid.", details=problems)
    reports = services.visible_reports(actor)
    if kind:
        reports = reports.filter(kind=KINDS[kind])
    return reports.order_by(*ORDERS[order])


def _form_defaults(query) -> dict:
    """The version named in ?model=&version= (links from a version page), the last 30 days."""
    today = timezone.now().date()
    named = "model" in query and "version" in query
    target = f"{query['model']}:{query['version']}" if named else ""
    return {
        "target": target,
        "from": (today - timedelta(days=30)).isoformat(),
        "to": today.isoformat(),
        "format": "pdf",
    }


def _compliance_form(post) -> dict:
    """The form's fields as the API's body; `to` is an inclusive day on the page."""
    name, _, version = post.get("target", "").partition(":")
    to_day = parse_date(post.get("to", "") or "") if _is_date(post.get("to")) else None
    return {
        "kind": Report.COMPLIANCE,
        "model": name,
        "version": version,
        "from": post.get("from", ""),
        "to": (to_day + timedelta(days=1)).isoformat() if to_day else post.get("to", ""),
        "format": post.get("format", ""),
    }


def _is_date(value: str | None) -> bool:
    try:
        return bool(value) and parse_date(value) is not None
    except ValueError:
        return False


@login_required
@page
def report_row(request, report_id: int):
    """One row of the list (htmx polls it until the report is finished)."""
    report = services.get_report_for_actor(roles.actor_for(request), report_id)
    return render(request, "reports/_row.html", {"report": report})


@login_required
@page
def report_download(request, report_id: int):
    return download_response(request, report_id, via="page")


@login_required
@require_POST
@page
def decision_notice(request, decision_id: int):
    """The decision page's "Decision notice" button."""
    actor = roles.actor_for(request)
    actor.require(*roles.EXPORT_NOTICES)
    get_decision_for_actor(actor, decision_id)  # from the URL: unseen is a 404 here
    data = {
        "kind": Report.NOTICE,
        "decision_id": decision_id,
        "format": request.POST.get("format", "pdf"),
    }
    services.request_report(actor, data, ip=client_ip(request), via="page")
    return redirect("report-list")
