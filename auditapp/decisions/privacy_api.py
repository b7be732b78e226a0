"""Legal holds and retention of inputs per model (API.md: Governance)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions import holds, input_retention
from auditapp.errors import InvalidInput
from auditapp.filtering import (
    newest_first_page,
    paging_parameters,
    takes_parameters,
)
from auditapp.registry.lookups import get_model_for_actor

LIST_LIMIT = 500  # holds a page unless ?limit= says otherwise


HOLD_LIST_PARAMETERS = [
    OpenApiParameter(
        "active",
        str,
        enum=["true", "false"],
        description="true: not released; false: released; without it, every hold",
    ),
    *paging_parameters(LIST_LIMIT),
]


class LegalHoldListView(APIView):
    @extend_schema(
        operation_id="legal_holds_list",
        parameters=HOLD_LIST_PARAMETERS,
        responses=OpenApiTypes.OBJECT,
    )
    @takes_parameters(HOLD_LIST_PARAMETERS)
    def get(self, request):
        """Legal holds, newest first (?active=true: not released; false: released; "false"
        had answered every hold, those in force among them)."""
        found = holds.visible_holds(roles.actor_for(request))
        active = request.query_params.get("active") or None
        if active not in (None, "true", "false", "1", "0"):
            raise InvalidInput.named("active", "must be true or false", code="invalid_parameters")
        if active in ("true", "1"):
            found = found.active()
        elif active in ("false", "0"):
            found = found.filter(released_at__isnull=False)
        page, next_cursor = newest_first_page(found, request.query_params, default=LIST_LIMIT)
        return Response({"results": [holds.hold_json(h) for h in page], "next": next_cursor})

    @extend_schema(
        operation_id="legal_holds_place",
        request=OpenApiTypes.OBJECT,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        hold = holds.place_hold(
            roles.actor_for(request), request.data, ip=client_ip(request), via="api"
        )
        return Response(holds.hold_json(hold), status=201)


class LegalHoldDetailView(APIView):
    @extend_schema(operation_id="legal_hold", responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request, hold_id: int):
        return Response(
            holds.hold_json(holds.get_hold_for_actor(roles.actor_for(request), hold_id))
        )


class LegalHoldReleaseView(APIView):
    @extend_schema(
        operation_id="legal_hold_release",
        request=OpenApiTypes.OBJECT,
        responses=OpenApiTypes.OBJECT,
    )
    def post(self, request, hold_id: int):
        actor = roles.actor_for(request)
        holds.get_hold_for_actor(actor, hold_id)  # 404 before 403 for a reader
        hold = holds.release_hold(actor, hold_id, request.data, ip=client_ip(request), via="api")
        return Response(holds.hold_json(hold))


class ModelRetentionView(APIView):
    @extend_schema(operation_id="model_retention", responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request, name: str):
        model = get_model_for_actor(roles.actor_for(request), name)
        return Response(input_retention.policy_json(model))

    @extend_schema(
        operation_id="model_retention_set",
        request=OpenApiTypes.OBJECT,
        responses=OpenApiTypes.OBJECT,
    )
    def put(self, request, name: str):
        actor = roles.actor_for(request)
        input_retention.set_retention(actor, name, request.data, ip=client_ip(request), via="api")
        return Response(input_retention.policy_json(get_model_for_actor(actor, name)))


class RetentionRunView(APIView):
    @extend_schema(
        operation_id="retention_run", request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT
    )
    def post(self, request):
        """Erase (or with dry_run, list) the inputs past each model's period, in this request."""
        actor = roles.actor_for(request)
        dry_run, model_name = input_retention.run_request(actor, request.data)
        runs = input_retention.apply_retention(
            actor, dry_run=dry_run, model_name=model_name, via="api", ip=client_ip(request)
        )
        return Response({"dry_run": dry_run, "results": [r.as_dict() for r in runs]})
