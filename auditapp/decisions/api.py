"""Decisions API (API.md: Decisions)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions import outcomes, sealing, services
from auditapp.decisions.filters import filter_decisions, keyset_page, parse_limit
from auditapp.decisions.models import Decision
from auditapp.decisions.presenters import DecisionPresenter

SEARCH_PARAMETERS = [
    OpenApiParameter(name, OpenApiTypes.STR, description=text)
    for name, text in [
        ("model", "model name"),
        ("version", "model version"),
        ("from", "ISO-8601, predicted at or after"),
        ("to", "ISO-8601, predicted before"),
        ("prediction", "predicted class"),
        ("score_min", "lowest score"),
        ("score_max", "highest score"),
        ("subject_ref", "pseudonymous subject reference"),
        ("top_reason", "a feature among the decision's top 3 SHAP features"),
        ("has_outcome", "true: an outcome was recorded; false: none yet"),
        ("feedback", "latest verdict: none, agree, disagree or unsure"),
        ("review", "open: awaiting review; resolved: reviewed"),
        ("feature.<name>", "exact value of an input feature; also feature.<name>__gte / __lte"),
        ("ordering", "-predicted_at (default), predicted_at, score, -score"),
        ("cursor", "the `next` value of the previous page"),
        ("limit", "page size, 1-500 (default 50)"),
    ]
]


class DecisionListView(APIView):
    @extend_schema(
        operation_id="decisions_search", parameters=SEARCH_PARAMETERS, responses=OpenApiTypes.OBJECT
    )
    def get(self, request):
        actor = roles.actor_for(request)
        actor.require(roles.READ_DECISIONS)
        queryset = filter_decisions(
            Decision.objects.visible_to(actor).with_related(), request.query_params, actor
        )
        rows, next_cursor = keyset_page(
            queryset,
            request.query_params.get("ordering"),
            request.query_params.get("cursor"),
            parse_limit(request.query_params.get("limit")),
        )
        services.note_search(actor, request.query_params, ip=client_ip(request), via="api")
        presenter = DecisionPresenter(actor)
        return Response({"results": [presenter.summary(d) for d in rows], "next": next_cursor})

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        results = services.record_decisions(
            roles.actor_for(request), request.data, source="api", ip=client_ip(request)
        )
        return Response({"results": results}, status=201)


class DecisionDetailView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, decision_id: int):
        actor = roles.actor_for(request)
        decision = roles.get_decision_for_actor(actor, decision_id)
        services.note_decision_viewed(actor, decision, ip=client_ip(request))
        return Response(DecisionPresenter(actor).detail(decision))


class DecisionExplainView(APIView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, decision_id: int):
        actor = roles.actor_for(request)
        decision = roles.get_decision_for_actor(actor, decision_id)
        methods = (
            request.data.get("methods", ["shap", "lime"])
            if isinstance(request.data, dict)
            else None
        )
        queued = services.request_explanations(actor, decision, methods, ip=client_ip(request))
        return Response(
            {"id": decision.pk, "queued": queued, "status_url": f"/api/v1/decisions/{decision.pk}"},
            status=202,
        )


class OutcomeListView(APIView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        results = outcomes.record_outcomes(
            roles.actor_for(request), request.data, ip=client_ip(request)
        )
        return Response({"results": results}, status=201)


class AuditVerifyView(APIView):
    @extend_schema(
        operation_id="audit_verify",
        parameters=[
            OpenApiParameter("seal_index", OpenApiTypes.INT, description="exported seal index"),
            OpenApiParameter("seal_hash", OpenApiTypes.STR, description="and its seal_hash"),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request):
        """Recompute every hash, root and link; optionally check against an exported seal."""
        against = None
        if "seal_index" in request.query_params or "seal_hash" in request.query_params:
            against = {
                "index": request.query_params.get("seal_index"),
                "seal_hash": request.query_params.get("seal_hash"),
            }
        return self._verify(request, against)

    @extend_schema(
        operation_id="audit_verify_against",
        request=OpenApiTypes.OBJECT,
        responses=OpenApiTypes.OBJECT,
    )
    def post(self, request):
        """Verify against an exported seal sent as the body (the JSON seals/latest returned)."""
        return self._verify(request, request.data)

    def _verify(self, request, against):
        result = sealing.verify_as(
            roles.actor_for(request), against=against, ip=client_ip(request), via="api"
        )
        return Response(result.as_dict())


class LatestSealView(APIView):
    @extend_schema(operation_id="audit_latest_seal", responses=OpenApiTypes.OBJECT)
    def get(self, request):
        """The latest seal, to keep outside the database and verify against later."""
        actor = roles.actor_for(request)
        document = sealing.export_latest_seal(actor, ip=client_ip(request), via="api")
        return Response(document)


class DecisionProofView(APIView):
    @extend_schema(operation_id="decision_inclusion_proof", responses=OpenApiTypes.OBJECT)
    def get(self, request, decision_id: int):
        """The RFC 6962 inclusion proof of the decision in its seal."""
        actor = roles.actor_for(request)
        decision = roles.get_decision_for_actor(actor, decision_id)
        return Response(sealing.inclusion_proof(decision))
