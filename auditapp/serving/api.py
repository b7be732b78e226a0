"""Serving API (API.md: Serving). Thin: parse, ask roles, call a service, answer."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.approvals.api import pending_response
from auditapp.approvals.models import Approval
from auditapp.filtering import refuse_unknown_fields, takes_parameters
from auditapp.serving import services

POLICY_EXAMPLE = OpenApiExample(
    "A canary and a shadow",
    value={
        "production": "3",
        "canary": {"version": "4", "share": 0.1},
        "shadow": ["5"],
        "enabled": True,
        "fallback": "2",
    },
)


class PredictView(APIView):
    @extend_schema(
        operation_id="models_predict",
        request=OpenApiTypes.OBJECT,
        responses=OpenApiTypes.OBJECT,
        examples=[
            OpenApiExample(
                "One instance",
                value={"inputs": {"age": 41, "income": 52000}, "request_id": "loan-000123"},
                request_only=True,
            )
        ],
    )
    def post(self, request, name: str):
        actor = roles.actor_for(request)
        model = services.model_for(actor, name, roles.PREDICT)
        served, batch = services.predict(actor, model, request.data, ip=client_ip(request))
        answers = [s.as_json() for s in served]
        return Response({"results": answers} if batch else answers[0])


class TrafficView(APIView):
    @extend_schema(operation_id="models_traffic_read", responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request, name: str):
        model = services.model_for(roles.actor_for(request), name, roles.READ_MODELS)
        return Response(services.read_traffic(model).as_json())

    @extend_schema(
        operation_id="models_traffic_change",
        request=OpenApiTypes.OBJECT,
        responses=OpenApiTypes.OBJECT,
        examples=[POLICY_EXAMPLE],
    )
    def put(self, request, name: str):
        actor = roles.actor_for(request)
        model = services.model_for(actor, name, roles.READ_MODELS)
        answer = services.change_traffic(actor, model, request.data, ip=client_ip(request))
        if isinstance(answer, Approval):
            return pending_response(answer)
        view, changed = answer
        return Response({**view.as_json(), "changed": changed})


class RollbackView(APIView):
    @extend_schema(
        operation_id="models_traffic_rollback",
        request=None,
        responses=OpenApiTypes.OBJECT,
    )
    def post(self, request, name: str):
        actor = roles.actor_for(request)
        model = services.model_for(actor, name, roles.READ_MODELS)
        # no body: {"revision": 1} had rolled back to the policy before, not to revision 1
        refuse_unknown_fields(request.data, (), "rollback")
        answer = services.roll_back_traffic(actor, model, ip=client_ip(request))
        if isinstance(answer, Approval):
            return pending_response(answer)
        return Response(answer.as_json())
