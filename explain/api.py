"""Asking for a decision's explanations again (API.md: Decisions)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions.lookups import get_decision_for_actor
from explain.services import request_explanations


class DecisionExplainView(APIView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, decision_id: int):
        actor = roles.actor_for(request)
        decision = get_decision_for_actor(actor, decision_id)
        methods = (
            request.data.get("methods", ["shap", "lime"])
            if isinstance(request.data, dict)
            else None
        )
        queued = request_explanations(actor, decision, methods, ip=client_ip(request))
        return Response(
            {"id": decision.pk, "queued": queued, "status_url": f"/api/v1/decisions/{decision.pk}"},
            status=202,
        )
