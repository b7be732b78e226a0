"""The access-log page (/audit/) and its CSV download.

Beside the events it shows the latest seal of the log they are sealed in, so it
lives with the log, above the accounts whose events it lists. Each event reads as
a sentence (accounts/event_sentences.py); this module looks up the names the
sentences need for a page of events (model versions, users) in two queries.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from auditapp.accounts import access_log, event_sentences, roles
from auditapp.accounts.audit import client_ip
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.sealing import latest_seal
from auditapp.errors import InvalidInput
from auditapp.filtering import refuse_more_rows_than, refuse_unknown_parameters
from auditapp.pages import csv_response, is_htmx, page, paginate, query_string
from auditapp.registry.models import ModelVersion

# ?order= of the page (the API and the CSV are newest first, by id: ids only grow).
ORDERS = {"newest": "-id", "oldest": "id"}
# What the page and its CSV take: the filters, the order, the page and its size, and the
# verification job the page shows when it was started from it.
PAGE_PARAMETERS = (*access_log.FILTERS, "order", "page", "limit", "verification")


@login_required
@page
def audit_log(request):
    """The access log a page at a time, with its total; filters and order in the URL."""
    actor = roles.actor_for(request)
    events = access_log.search_events(actor, request.GET)
    refuse_unknown_parameters(request.GET, PAGE_PARAMETERS)
    order = request.GET.get("order") or "newest"
    if order not in ORDERS:
        raise InvalidInput(
            "order must be newest or oldest.",
            code="invalid_parameters",
            details={"order": ["must be newest or oldest"]},
        )
    pager = paginate(events.order_by(ORDERS[order]), request.GET)
    access_log.note_read(actor, request.GET, ip=client_ip(request), via="page")
    rows = list(pager.rows)
    for event, sentence in zip(rows, describe_events(rows, actor.capabilities), strict=True):
        event.sentence = sentence
        event.detail_lines = event_sentences.detail_lines(event.details)
    context = {
        "params": {name: request.GET.get(name, "") for name in (*access_log.FILTERS, "limit")},
        "order": order,
        "events": rows,
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
    refuse_unknown_parameters(request.GET, PAGE_PARAMETERS)
    refuse_more_rows_than(events, access_log.EXPORT_LIMIT, "access log selection")
    access_log.note_read(actor, request.GET, ip=client_ip(request), via="page", exported=True)
    rows = access_log.csv_rows(events, actor.can(roles.VIEW_SENSITIVE), summaries=_summaries)
    return csv_response("access-log.csv", access_log.CSV_COLUMNS, rows)


def describe_events(
    events: Sequence[AuditEvent], capabilities: frozenset[str] = frozenset()
) -> list[event_sentences.Sentence]:
    """Each event as a sentence; its objects linked where `capabilities` open their pages.

    Looks up the names of the model versions and users the events name (two queries
    at most, whatever their number). Without capabilities: plain sentences.
    """
    wanted = event_sentences.ids_to_look_up(events)
    version_ids, user_ids = wanted[event_sentences.VERSION_TYPE], wanted[event_sentences.USER_TYPE]
    versions, users = {}, {}
    if version_ids:
        found = ModelVersion.objects.filter(pk__in=version_ids)
        versions = {
            str(pk): (name, version)
            for pk, name, version in found.values_list("pk", "registered_model__name", "version")
        }
    if user_ids:
        users = {
            str(user.pk): user.get_username()
            for user in get_user_model().objects.filter(pk__in=user_ids)
        }
    context = event_sentences.Context(
        capabilities=frozenset(capabilities), versions=versions, users=users
    )
    return [event_sentences.describe(event, context) for event in events]


def _summaries(events: Sequence[AuditEvent]) -> list[str]:
    """The CSV's summary column: the sentences as plain text."""
    return [sentence.text() for sentence in describe_events(events)]
