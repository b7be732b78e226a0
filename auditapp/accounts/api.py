"""Access-log API (API.md: Audit)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import access_log, roles
from auditapp.accounts.audit import client_ip
from auditapp.filtering import (
    PARAMETER_TYPES,
    newest_first_page,
    paging_parameters,
    takes_parameters,
)

EVENT_PARAMETERS = [
    OpenApiParameter(name, PARAMETER_TYPES.get(name, OpenApiTypes.STR), description=text)
    for name, text in [
        ("actor", "user name (exact)"),
        ("action", "an action (auth.login) or a prefix ending in a dot (decision.)"),
        ("object_type", "e.g. decisions.decision"),
        ("object_id", "the object's id"),
        ("from", "ISO-8601, at or after"),
        ("to", "ISO-8601, before"),
    ]
] + paging_parameters()


class AuditEventListView(APIView):
    @extend_schema(
        operation_id="audit_events", parameters=EVENT_PARAMETERS, responses=OpenApiTypes.OBJECT
    )
    @takes_parameters(EVENT_PARAMETERS)
    def get(self, request):
        """The access log, newest first (compliance officers, auditors, admins)."""
        actor = roles.actor_for(request)
        events = access_log.search_events(actor, request.query_params)
        rows, next_cursor = newest_first_page(events, request.query_params)
        access_log.note_read(actor, request.query_params, ip=client_ip(request), via="api")
        show = actor.can(roles.VIEW_SENSITIVE)
        results = [access_log.event_row(e, show) for e in rows]
        return Response({"results": results, "next": next_cursor})
