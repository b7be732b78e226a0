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
from auditapp.errors import InvalidInput
from auditapp.pages import csv_response, is_htmx, page, paginate, query_string

# ?order= of the page (the API and the CSV are newest first, by id: ids only grow).
ORDERS = {"newest": "-id", "oldest": "id"}


@login_required
@page
def audit_log(request):
    """The access log a page at a time, with its total; filters and order in the URL."""
    actor = roles.actor_for(request)
    events = access_log.search_events(actor, request.GET)
    order = request.GET.get("order") or "newest"
    if order not in ORDERS:
        raise InvalidInput(
            "order must be newest or oldest.",
            code="invalid_parameters",
            details={"order": ["must be newest or oldest"]},
        )
    pager = paginate(events.order_by(ORDERS[order]), request.GET)
    access_log.note_read(actor, request.GET, ip=client_ip(request), via="page")
    context = {
        "params": {name: request.GET.get(name, "") for name in (*access_log.FILTERS, "limit")},
        "order": order,
        "events": pager.rows,
        "pager": pager,
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
