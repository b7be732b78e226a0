"""POST /api/v1/decisions/{id}/feedback (API.md)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.reviews.services import feedback_json, submit_feedback


class DecisionFeedbackView(APIView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, decision_id: int):
        actor = roles.actor_for(request)
        decision = roles.get_decision_for_actor(actor, decision_id)
        feedback = submit_feedback(actor, decision, request.data, ip=client_ip(request))
        return Response(feedback_json(feedback), status=201)
