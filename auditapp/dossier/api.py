"""The decision search and a decision's detail (API.md: Decisions)."""

from __future__ import annotations

from django.utils.decorators import method_decorator
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions import api as decisions_api
from auditapp.decisions import services
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.decisions.models import Decision
from auditapp.decisions.presenters import SUMMARY_VALUES, DecisionPresenter
from auditapp.dossier.filters import (
    filter_decisions_and_reason,
    keyset_page,
    note_search,
    refuse_values_the_model_cannot_have,
)
from auditapp.dossier.presenters import decision_detail
from auditapp.filtering import PARAMETER_TYPES, parse_limit, takes_parameters
from auditapp.registry.lookups import refuse_unseen_model_filter
from auditapp.replicas import replica_view

SEARCH_PARAMETERS = [
    OpenApiParameter(name, PARAMETER_TYPES.get(name, OpenApiTypes.STR), description=text)
    for name, text in [
        ("model", "model name"),
        ("version", "model version"),
        ("from", "ISO-8601, predicted at or after"),
        ("to", "ISO-8601, predicted before"),
        ("prediction", "predicted class (digits also find an integer class)"),
        ("score_min", "lowest score"),
        ("score_max", "highest score"),
        ("subject_ref", "pseudonymous subject reference"),
        ("top_reason", "a feature among the decision's top 3 SHAP features"),
        ("has_outcome", "true: an outcome was recorded; false: none yet"),
        ("feedback", "latest verdict: none, agree, disagree or unsure"),
        ("review", "open: awaiting review; resolved: reviewed"),
        ("arm", "production, canary, fallback or shadow; default every arm but shadow; all"),
        ("feature.<name>", "exact value of an input feature; also feature.<name>__gte / __lte"),
        ("ordering", "-predicted_at (default), predicted_at, score, -score"),
        ("cursor", "the `next` value of the previous page"),
        ("limit", "page size, 1-500 (default 50)"),
    ]
]


# The decisions collection: GET searches it here; POST (recording) is the decisions app's.
# (No docstring: it would become the OpenAPI description of both.)
class DecisionListView(decisions_api.DecisionListView):
    @extend_schema(
        operation_id="decisions_search", parameters=SEARCH_PARAMETERS, responses=OpenApiTypes.OBJECT
    )
    @method_decorator(replica_view)  # a search may lag by the replica's delay; its event may not
    def get(self, request):
        actor = roles.actor_for(request)
        actor.require(roles.READ_DECISIONS)
        queryset, reason = filter_decisions_and_reason(
            Decision.objects.visible_to(actor), request.query_params, actor
        )
        # Plain rows, not Decisions: no model objects to build, no version rows to read.
        rows, next_cursor = keyset_page(
            queryset.values(*SUMMARY_VALUES),
            request.query_params.get("ordering"),
            request.query_params.get("cursor"),
            parse_limit(request.query_params.get("limit")),
            reason,
        )
        if not rows:  # nothing found: say so if nothing could have been (no round trip else)
            refuse_unseen_model_filter(actor, request.query_params)
            refuse_values_the_model_cannot_have(request.query_params, actor)
        note_search(actor, request.query_params, ip=client_ip(request), via="api")
        presenter = DecisionPresenter(actor)
        return Response({"results": [presenter.row_summary(r) for r in rows], "next": next_cursor})


class DecisionDetailView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request, decision_id: int):
        actor = roles.actor_for(request)
        decision = get_decision_for_actor(actor, decision_id)
        services.note_decision_viewed(actor, decision, ip=client_ip(request))
        return Response(decision_detail(DecisionPresenter(actor), decision))
