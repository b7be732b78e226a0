"""Decisions API (API.md: Decisions)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import access_log, roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions import jobs, outcomes, proofs, sealing, services, verification
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.filtering import parse_limit, takes_parameters


# POST records decisions; the search (GET) is added above, by auditapp.dossier.api.
class DecisionListView(APIView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        results = services.record_decisions(
            roles.actor_for(request), request.data, source="api", ip=client_ip(request)
        )
        return Response({"results": results}, status=201)


class OutcomeListView(APIView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        results = outcomes.record_outcomes(
            roles.actor_for(request), request.data, ip=client_ip(request)
        )
        return Response({"results": results}, status=201)


VERIFY_PARAMETERS = [
    OpenApiParameter("tree_size", OpenApiTypes.INT, description="a kept seal's tree size"),
    OpenApiParameter("root_hash", OpenApiTypes.STR, description="and its root hash"),
    OpenApiParameter("seal_index", OpenApiTypes.INT, description="former chain seal"),
    OpenApiParameter("seal_hash", OpenApiTypes.STR, description="and its seal_hash"),
]


class AuditVerifyView(APIView):
    @extend_schema(
        operation_id="audit_verify", parameters=VERIFY_PARAMETERS, responses=OpenApiTypes.OBJECT
    )
    @takes_parameters(VERIFY_PARAMETERS)
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
    @takes_parameters(())
    def get(self, request, job_id: int):
        """A verification job: status, progress (0-100) and, once done, GET verify's body."""
        return Response(jobs.job_json(jobs.get_job_for_actor(roles.actor_for(request), job_id)))


SEAL_LIST_PARAMETERS = [
    OpenApiParameter("cursor", OpenApiTypes.STR, description="`next` of the last page"),
    OpenApiParameter("limit", OpenApiTypes.INT, description="page size, 1-500"),
]


class SealListView(APIView):
    @extend_schema(
        operation_id="audit_seals", parameters=SEAL_LIST_PARAMETERS, responses=OpenApiTypes.OBJECT
    )
    @takes_parameters(SEAL_LIST_PARAMETERS)
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
    @takes_parameters(())
    def get(self, request, tree_size: int | None = None):
        """One seal, to keep outside the database and check proofs against; audited."""
        document = sealing.export_seal(
            roles.actor_for(request), tree_size, ip=client_ip(request), via="api"
        )
        return Response(document)


class LatestSealView(SealDetailView):
    @extend_schema(operation_id="audit_latest_seal", responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request):
        """The latest seal, to keep outside the database and verify against later; audited."""
        return super().get(request)


class PublicKeyView(APIView):
    @extend_schema(operation_id="audit_public_key", responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request):
        """The Ed25519 public key the seals are signed with, for auditors to keep."""
        return Response(sealing.public_key(roles.actor_for(request)))


CONSISTENCY_PARAMETERS = [
    OpenApiParameter("first", OpenApiTypes.INT, description="an earlier seal's tree size"),
    OpenApiParameter("second", OpenApiTypes.INT, description="a later one (latest)"),
]


class ConsistencyView(APIView):
    @extend_schema(
        operation_id="audit_consistency",
        parameters=CONSISTENCY_PARAMETERS,
        responses=OpenApiTypes.OBJECT,
    )
    @takes_parameters(CONSISTENCY_PARAMETERS)
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
    @takes_parameters(PROOF_PARAMETERS)
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
    @takes_parameters(PROOF_PARAMETERS)
    def get(self, request, event_id: int):
        """RFC 6962 inclusion proof of an audit event in the tree of a seal (as readable as it)."""
        actor = roles.actor_for(request)
        event = access_log.get_event_for_actor(actor, event_id)
        return Response(proofs.inclusion_proof(event, requested_tree_size(request)))
