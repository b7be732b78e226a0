"""Decisions API (API.md: Decisions)."""

from __future__ import annotations

from django.utils.decorators import method_decorator
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import access_log, roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions import jobs, outcomes, proofs, sealing, services, verification
from auditapp.decisions.filters import filter_decisions, keyset_page
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.decisions.models import Decision
from auditapp.decisions.presenters import DecisionPresenter
from auditapp.filtering import parse_limit
from auditapp.replicas import replica_view

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
    @method_decorator(replica_view)  # a search may lag by the replica's delay; its event may not
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
        decision = get_decision_for_actor(actor, decision_id)
        services.note_decision_viewed(actor, decision, ip=client_ip(request))
        return Response(DecisionPresenter(actor).detail(decision))


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
            OpenApiParameter("tree_size", OpenApiTypes.INT, description="a kept seal's tree size"),
            OpenApiParameter("root_hash", OpenApiTypes.STR, description="and its root hash"),
            OpenApiParameter("seal_index", OpenApiTypes.INT, description="former chain seal"),
            OpenApiParameter("seal_hash", OpenApiTypes.STR, description="and its seal_hash"),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request):
        """Verify now, in this request, up to ATTEST_VERIFY_NOW_LIMIT records (else 409: POST)."""
        params = request.query_params
        against = None
        if "tree_size" in params or "root_hash" in params:
            against = {"tree_size": params.get("tree_size"), "root_hash": params.get("root_hash")}
        elif "seal_index" in params or "seal_hash" in params:
            against = {"index": params.get("seal_index"), "seal_hash": params.get("seal_hash")}
        actor = roles.actor_for(request)
        actor.require(roles.VERIFY_CHAIN)
        jobs.check_small_enough_to_verify_now()
        result = verification.verify_as(actor, against=against, ip=client_ip(request), via="api")
        return Response(result.as_dict())

    @extend_schema(
        operation_id="audit_verify_job",
        request=OpenApiTypes.OBJECT,
        responses={202: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        """Verify as a job (poll status_url); a kept seal as the body is verified against."""
        against = request.data if request.data else None
        job = jobs.request_verification(
            roles.actor_for(request), against, ip=client_ip(request), via="api"
        )
        return Response({"id": job.pk, "status_url": f"/api/v1/audit/verify/{job.pk}"}, 202)


class VerificationJobView(APIView):
    @extend_schema(operation_id="audit_verify_status", responses=OpenApiTypes.OBJECT)
    def get(self, request, job_id: int):
        """A verification job: status, progress (0-100) and, once done, GET verify's body."""
        return Response(jobs.job_json(jobs.get_job_for_actor(roles.actor_for(request), job_id)))


class SealListView(APIView):
    @extend_schema(
        operation_id="audit_seals",
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR, description="`next` of the last page"),
            OpenApiParameter("limit", OpenApiTypes.INT, description="page size, 1-500"),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request):
        """Every seal (signed tree head), newest first."""
        rows, next_cursor = sealing.seals_page(
            roles.actor_for(request),
            request.query_params.get("cursor"),
            parse_limit(request.query_params.get("limit")),
        )
        return Response({"results": rows, "next": next_cursor})


class SealDetailView(APIView):
    @extend_schema(operation_id="audit_seal", responses=OpenApiTypes.OBJECT)
    def get(self, request, tree_size: int | None = None):
        """One seal, to keep outside the database and check proofs against; audited."""
        document = sealing.export_seal(
            roles.actor_for(request), tree_size, ip=client_ip(request), via="api"
        )
        return Response(document)


class LatestSealView(SealDetailView):
    @extend_schema(operation_id="audit_latest_seal", responses=OpenApiTypes.OBJECT)
    def get(self, request):
        """The latest seal, to keep outside the database and verify against later; audited."""
        return super().get(request)


class PublicKeyView(APIView):
    @extend_schema(operation_id="audit_public_key", responses=OpenApiTypes.OBJECT)
    def get(self, request):
        """The Ed25519 public key the seals are signed with, for auditors to keep."""
        return Response(sealing.public_key(roles.actor_for(request)))


class ConsistencyView(APIView):
    @extend_schema(
        operation_id="audit_consistency",
        parameters=[
            OpenApiParameter("first", OpenApiTypes.INT, description="an earlier seal's tree size"),
            OpenApiParameter("second", OpenApiTypes.INT, description="a later one (latest)"),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request):
        """RFC 6962 proof that the tree of seal `second` extends the tree of seal `first`."""
        actor, params = roles.actor_for(request), request.query_params
        sealing.require_seal_reader(actor)  # 403 before any 400
        first = sealing.parse_tree_size(params.get("first"), "first")
        second = params.get("second")
        second = None if second in (None, "") else sealing.parse_tree_size(second, "second")
        return Response(proofs.consistency_proof(actor, first, second))


PROOF_PARAMETERS = [
    OpenApiParameter("tree_size", OpenApiTypes.INT, description="a seal (default: the latest)")
]


def requested_tree_size(request) -> int | None:
    """?tree_size= of a proof request: None for the latest seal, else a positive integer (400)."""
    raw = request.query_params.get("tree_size")
    return None if raw in (None, "") else sealing.parse_tree_size(raw)


class DecisionProofView(APIView):
    @extend_schema(
        operation_id="decision_inclusion_proof",
        parameters=PROOF_PARAMETERS,
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request, decision_id: int):
        """RFC 6962 inclusion proof of the decision in the tree of a seal."""
        actor = roles.actor_for(request)
        decision = get_decision_for_actor(actor, decision_id)
        return Response(proofs.inclusion_proof(decision, requested_tree_size(request)))


class AuditEventProofView(APIView):
    @extend_schema(
        operation_id="audit_event_inclusion_proof",
        parameters=PROOF_PARAMETERS,
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request, event_id: int):
        """RFC 6962 inclusion proof of an audit event in the tree of a seal (as readable as it)."""
        actor = roles.actor_for(request)
        event = access_log.get_event_for_actor(actor, event_id)
        return Response(proofs.inclusion_proof(event, requested_tree_size(request)))
