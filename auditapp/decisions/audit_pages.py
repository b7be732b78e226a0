"""The access-log page (/audit/) and its CSV download.

Beside the events it shows the latest seal of the log they are sealed in, so it
lives with the log, above the accounts whose events it lists.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from auditapp.accounts import access_log, roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions.sealing import latest_seal
from auditapp.filtering import parse_limit
from auditapp.pages import csv_response, is_htmx, page, query_string


@login_required
@page
def audit_log(request):
    actor = roles.actor_for(request)
    events = access_log.search_events(actor, request.GET)
    rows, next_cursor = access_log.page_of_events(
        events, request.GET.get("cursor"), parse_limit(request.GET.get("limit"))
    )
    access_log.note_read(actor, request.GET, ip=client_ip(request), via="page")
    context = {
        "params": {name: request.GET.get(name, "") for name in access_log.FILTERS},
        "events": rows,
        "next_query": query_string(request.GET, cursor=next_cursor) if next_cursor else None,
        "export_query": query_string(request.GET, cursor=None),
        "seal": latest_seal(),
        "can_verify": actor.can(roles.VERIFY_CHAIN),
    }
    template = "accounts/_events.html" if is_htmx(request) else "accounts/audit_log.html"
    return render(request, template, context)


@login_required
@page
def audit_log_csv(request):
    """The filtered access log as CSV; the download is itself an audit event."""
    actor = roles.actor_for(request)
    events = access_log.search_events(actor, request.GET)
    access_log.note_read(actor, request.GET, ip=client_ip(request), via="page", exported=True)
    rows = access_log.csv_rows(events, actor.can(roles.VIEW_SENSITIVE))
    return csv_response("access-log.csv", access_log.CSV_COLUMNS, rows)
