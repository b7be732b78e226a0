"""A person's data rights (API.md: Governance): subject requests and the access report."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.filtering import newest_first_page, paging_parameters, takes_parameters
from auditapp.reports import subjects

LIST_LIMIT = 500  # requests a page unless ?limit= says otherwise


LIST_PARAMETERS = [
    OpenApiParameter("subject_ref", str, description="one subject's requests"),
    *paging_parameters(LIST_LIMIT),
]


class SubjectRequestListView(APIView):
    @extend_schema(
        operation_id="subject_requests_list",
        parameters=LIST_PARAMETERS,
        responses=OpenApiTypes.OBJECT,
    )
    @takes_parameters(LIST_PARAMETERS)
    def get(self, request):
        """Subject requests, newest first (?subject_ref= narrows)."""
        found = subjects.visible_requests(roles.actor_for(request))
        if subject := request.query_params.get("subject_ref"):
            found = found.filter(subject_ref=subject)
        page, next_cursor = newest_first_page(found, request.query_params, default=LIST_LIMIT)
        return Response({"results": [subjects.request_json(r) for r in page], "next": next_cursor})

    @extend_schema(
        operation_id="subject_requests_file",
        request=OpenApiTypes.OBJECT,
        responses={202: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        """Access (its report to download) or erasure (done, or refused with the reason)."""
        filed = subjects.file_subject_request(
            roles.actor_for(request), request.data, ip=client_ip(request), via="api"
        )
        return Response(subjects.request_json(filed), status=202)


class SubjectRequestDetailView(APIView):
    @extend_schema(operation_id="subject_request", responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request, request_id: int):
        found = subjects.get_request_for_actor(roles.actor_for(request), request_id)
        return Response(subjects.request_json(found))


class SubjectAccessReportView(APIView):
    @extend_schema(operation_id="subject_access_report", responses={200: OpenApiTypes.BINARY})
    @takes_parameters(())
    def get(self, request, request_id: int, fmt: str):
        return access_report_response(request, request_id, fmt, via="api")


def access_report_response(request, request_id: int, fmt: str, *, via: str) -> HttpResponse:
    actor = roles.actor_for(request)
    found = subjects.get_request_for_actor(actor, request_id)
    content, digest = subjects.download_access_report(
        actor, found, fmt, ip=client_ip(request), via=via
    )
    response = HttpResponse(content, content_type=subjects.FORMATS[fmt])
    name = f"access-{found.pk}.{fmt}"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-Content-SHA256"] = digest
    return response
