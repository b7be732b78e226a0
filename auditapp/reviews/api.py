"""POST /api/v1/decisions/{id}/feedback (API.md)."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.filtering import takes_parameters
from auditapp.registry.lookups import get_version_for_actor
from auditapp.reviews.exports import FORMATS, export_labelled, parse_period
from auditapp.reviews.services import feedback_json, submit_feedback


class DecisionFeedbackView(APIView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, decision_id: int):
        actor = roles.actor_for(request)
        decision = get_decision_for_actor(actor, decision_id)
        feedback = submit_feedback(actor, decision, request.data, ip=client_ip(request))
        return Response(feedback_json(feedback), status=201)


LABELLED_PARAMETERS = [
    OpenApiParameter("format", str, enum=list(FORMATS), description="default: csv"),
    OpenApiParameter("from", OpenApiTypes.DATETIME),
    OpenApiParameter("to", OpenApiTypes.DATETIME),
]


class LabelledDataView(APIView):
    """GET /api/v1/models/{name}/versions/{version}/labelled-data?format=csv|parquet&from=&to="""

    @extend_schema(parameters=LABELLED_PARAMETERS, responses={200: OpenApiTypes.BINARY})
    @takes_parameters(LABELLED_PARAMETERS)
    def get(self, request, name: str, version: str):
        return labelled_download(request, name, version, request.query_params.get("format", "csv"))


def labelled_download(request, name: str, version: str, fmt: str) -> HttpResponse:
    actor = roles.actor_for(request)
    model_version = get_version_for_actor(actor, name, version)
    start, end = parse_period(request.GET)
    data = export_labelled(actor, model_version, fmt, start, end, ip=client_ip(request))
    response = HttpResponse(data, content_type=FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="{name}-v{version}-labelled.{fmt}"'
    return response
