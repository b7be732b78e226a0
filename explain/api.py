"""Asking for a decision's explanations again, and its counterfactuals (API.md: Decisions)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.decisions.presenters import DecisionPresenter
from explain.counterfactual_presenters import counterfactuals_json
from explain.counterfactual_work import request_counterfactuals
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


class DecisionCounterfactualsView(APIView):
    """A decision's counterfactuals (GET), and computing them again (POST, 202)."""

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT},
        description=(
            "The decision's stored counterfactuals: status (pending, done, failed, "
            "none-needed, not-requested), each counterfactual's changes, sentence, re-scored "
            "prediction and score, sparsity, distance and plausibility, the quality figures, "
            "method, configuration, library versions and seed. A masked feature's values "
            "are withheld."
        ),
    )
    def get(self, request, decision_id: int):
        actor = roles.actor_for(request)
        decision = get_decision_for_actor(actor, decision_id)
        masked = DecisionPresenter(actor).masked_features(decision)
        return Response(counterfactuals_json(decision, masked))

    @extend_schema(
        request=None,
        responses={202: OpenApiTypes.OBJECT},
        description="Compute the decision's counterfactuals again (same seed), audited.",
    )
    def post(self, request, decision_id: int):
        actor = roles.actor_for(request)
        decision = get_decision_for_actor(actor, decision_id)
        request_counterfactuals(actor, decision, ip=client_ip(request))
        return Response(
            {
                "id": decision.pk,
                "status": "pending",
                "status_url": f"/api/v1/decisions/{decision.pk}/counterfactuals",
            },
            status=202,
        )
