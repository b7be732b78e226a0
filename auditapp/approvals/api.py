"""Approvals API (API.md: Governance). Thin: parse, ask roles, call a service, answer."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.approvals import services
from auditapp.approvals.models import Approval
from auditapp.errors import InvalidInput
from auditapp.filtering import (
    newest_first_page,
    paging_parameters,
    refuse_unknown_fields,
    takes_parameters,
)

LIST_LIMIT = 200  # approvals a page (newest first) unless ?limit= says otherwise


def pending_response(approval: Approval) -> Response:
    """What a gated change answers: 202, the approval it now waits for."""
    return Response({"approval": services.approval_json(approval)}, status=202)


def _comment(request):
    """The body's comment: a body that is not an object (["ok"]) had approved, its comment
    lost; it is refused, as a field the decision does not take is."""
    if not isinstance(request.data, dict):
        raise InvalidInput('Send {"comment"?: text}; nothing was decided.')
    refuse_unknown_fields(request.data, ("comment",), "decision on an approval")
    return request.data.get("comment")


LIST_PARAMETERS = [
    OpenApiParameter("state", str, enum=list(services.STATES)),
    *paging_parameters(LIST_LIMIT),
]


class ApprovalListView(APIView):
    @extend_schema(
        operation_id="approvals_list", parameters=LIST_PARAMETERS, responses=OpenApiTypes.OBJECT
    )
    @takes_parameters(LIST_PARAMETERS)
    def get(self, request):
        actor = roles.actor_for(request)
        approvals, next_cursor = newest_first_page(
            services.approvals_for_actor(actor, request.query_params.get("state")),
            request.query_params,
            default=LIST_LIMIT,
        )
        results = [services.approval_json(a) for a in approvals]
        return Response({"results": results, "next": next_cursor})


class ApprovalDetailView(APIView):
    @extend_schema(operation_id="approvals_read", responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request, approval_id: int):
        approval = services.get_approval_for_actor(roles.actor_for(request), approval_id)
        return Response(services.approval_json(approval))


class ApprovalApproveView(APIView):
    @extend_schema(
        operation_id="approvals_approve", request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT
    )
    def post(self, request, approval_id: int):
        actor = roles.actor_for(request)
        approval = services.approve(actor, approval_id, _comment(request), ip=client_ip(request))
        return Response(services.approval_json(approval))


class ApprovalRejectView(APIView):
    @extend_schema(
        operation_id="approvals_reject", request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT
    )
    def post(self, request, approval_id: int):
        actor = roles.actor_for(request)
        approval = services.reject(actor, approval_id, _comment(request), ip=client_ip(request))
        return Response(services.approval_json(approval))
