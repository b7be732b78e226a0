"""Models API (API.md: Models). Thin: parse, ask roles, call a service, answer."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.approvals.api import pending_response
from auditapp.approvals.models import Approval
from auditapp.approvals.services import stage_history
from auditapp.errors import InvalidInput
from auditapp.filtering import refuse_unknown_fields, takes_parameters
from auditapp.registry import services
from auditapp.registry.lookups import get_model_for_actor, get_version_for_actor
from auditapp.registry.models import ModelVersion, RegisteredModel, agreement_settings


def version_url(model_version: ModelVersion) -> str:
    return reverse(
        "api-model-version",
        args=[model_version.registered_model.name, model_version.version],
    )


def version_summary(model_version: ModelVersion) -> dict:
    return {
        "name": model_version.registered_model.name,
        "version": model_version.version,
        "sha256": model_version.artifact_sha256,
        "stage": model_version.stage,
        "url": version_url(model_version),
    }


def version_detail(model_version: ModelVersion) -> dict:
    return {
        **version_summary(model_version),
        "artifact_format": model_version.artifact_format,
        "schema": model_version.schema,
        "schema_sha256": model_version.schema_sha256,
        "background_rows": model_version.background_rows,
        "background_sha256": model_version.background_sha256 or None,
        "card": {
            "description": model_version.description,
            "intended_use": model_version.intended_use,
            "limitations": model_version.limitations,
            "training_data": model_version.training_data,
            "metrics": model_version.metrics,
        },
        "explain": {
            "lime": model_version.lime_mode,
            "lime_sample_rate": model_version.lime_sample_rate,
            **model_version.explain_settings,
            "counterfactuals": model_version.counterfactual_policy,
            # The thresholds in force (a version registered before they existed: the defaults).
            "agreement": agreement_settings(model_version.explain_settings),
        },
        "self_test": model_version.self_test,
        "created_by": model_version.created_by.get_username() if model_version.created_by else None,
        "created_at": model_version.created_at,
        "stage_history": [
            {
                "from": change.from_stage or None,
                "to": change.to_stage,
                "by": change.changed_by.get_username() if change.changed_by else None,
                "at": change.changed_at,
                # Under four-eyes: the approval that made it, and who approved it.
                "approval": change.approval.pk if change.approval else None,
                "approved_by": change.approval.step.decider_name if change.approval else None,
            }
            for change in stage_history(model_version)
        ],
    }


def model_json(model: RegisteredModel, versions) -> dict:
    return {
        "name": model.name,
        "description": model.description,
        "task": model.task,
        "owner": model.owner.get_username() if model.owner else None,
        "four_eyes": model.four_eyes,
        "created_at": model.created_at,
        "versions": [version_summary(v) for v in versions],
    }


class RegisterVersionRequest(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField()
    artifact = serializers.FileField()
    artifact_format = serializers.ChoiceField(choices=["skops", "joblib"])
    schema = serializers.CharField(help_text="The feature schema, as JSON.")
    background = serializers.FileField(required=False, help_text="CSV with the schema's columns.")
    card = serializers.CharField(required=False, help_text="JSON model card.")
    explain = serializers.CharField(
        required=False,
        help_text='JSON, e.g. {"lime": "sample", "counterfactuals": "on_demand"}.',
    )


def _file_bytes(request, field: str, required: bool) -> bytes | None:
    upload = request.FILES.get(field)
    if upload is None:
        if required:
            raise InvalidInput(f"{field} is required (a file in a multipart form).")
        return None
    return upload.read()


class ModelListView(APIView):
    @extend_schema(operation_id="models_list", responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request):
        actor = roles.actor_for(request)
        actor.require(roles.READ_MODELS)
        models = (
            RegisteredModel.objects.visible_to(actor)
            .select_related("owner")
            .prefetch_related("versions__registered_model")
        )
        return Response({"results": [model_json(m, m.versions.all()) for m in models]})

    @extend_schema(
        operation_id="models_register_version",
        request={"multipart/form-data": RegisterVersionRequest},
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        actor = roles.actor_for(request)
        if not isinstance(request.data, dict):  # a JSON list had been a 500
            raise InvalidInput(
                "A model registration is a multipart form (name, version, artifact, schema, ...)."
            )
        refuse_unknown_fields(request.data, RegisterVersionRequest().fields, "model registration")
        upload = services.VersionUpload(
            name=request.data.get("name", ""),
            version=request.data.get("version", ""),
            artifact=_file_bytes(request, "artifact", required=True),
            artifact_format=request.data.get("artifact_format", "skops"),
            schema=request.data.get("schema"),
            background=_file_bytes(request, "background", required=False),
            card=request.data.get("card"),
            explain=request.data.get("explain"),
        )
        model_version = services.register_model_version(actor, upload, ip=client_ip(request))
        return Response(version_summary(model_version), status=201)


class ModelDetailView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request, name: str):
        model = get_model_for_actor(roles.actor_for(request), name)
        versions = model.versions.select_related("registered_model")
        return Response(model_json(model, versions))


class ModelVersionView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request, name: str, version: str):
        model_version = get_version_for_actor(roles.actor_for(request), name, version)
        return Response(version_detail(model_version))


class StageRequest(serializers.Serializer):
    stage = serializers.ChoiceField(choices=[s for s, _ in ModelVersion.STAGES])


class ModelVersionStageView(APIView):
    @extend_schema(request=StageRequest, responses=OpenApiTypes.OBJECT)
    def post(self, request, name: str, version: str):
        actor = roles.actor_for(request)
        model_version = get_version_for_actor(actor, name, version)
        refuse_unknown_fields(request.data, ("stage",), "stage change")
        stage = request.data.get("stage") if isinstance(request.data, dict) else None
        changed = services.change_stage(actor, model_version, stage, ip=client_ip(request))
        if isinstance(changed, Approval):
            return pending_response(changed)
        return Response(version_detail(changed))


class FourEyesRequest(serializers.Serializer):
    enabled = serializers.BooleanField()


class ModelFourEyesView(APIView):
    @extend_schema(request=FourEyesRequest, responses=OpenApiTypes.OBJECT)
    def put(self, request, name: str):
        actor = roles.actor_for(request)
        model = get_model_for_actor(actor, name)
        refuse_unknown_fields(request.data, ("enabled",), "four-eyes setting")
        enabled = request.data.get("enabled") if isinstance(request.data, dict) else None
        changed = services.set_four_eyes(actor, model, enabled, ip=client_ip(request))
        if isinstance(changed, Approval):
            return pending_response(changed)
        return Response({"name": changed.name, "four_eyes": changed.four_eyes})
