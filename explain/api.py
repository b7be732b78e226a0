"""A decision's explanations asked for again, edited inputs tried on it (what-if), and its
counterfactuals."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiTypes, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.decisions.presenters import DecisionPresenter
from auditapp.filtering import refuse_unknown_fields, takes_parameters
from explain.counterfactual_presenters import counterfactuals_json
from explain.counterfactual_work import request_counterfactuals
from explain.services import request_explanations
from explain.whatif import run_what_if


class DecisionExplainView(APIView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses={202: OpenApiTypes.OBJECT})
    def post(self, request, decision_id: int):
        actor = roles.actor_for(request)
        decision = get_decision_for_actor(actor, decision_id)
        refuse_unknown_fields(request.data, ("methods",), "explanation request")
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


# -- what-if: the OpenAPI document's shapes (the service checks the body itself, so that its
# errors name the field as ingestion's do) ---------------------------------------------------


class WhatIfRequest(serializers.Serializer):
    inputs = serializers.DictField(
        help_text="The features to change and their new values, merged over the decision's "
        "inputs; every feature masked from you (sensitive) must be given a value."
    )


class ShapSerializer(serializers.Serializer):
    explainer = serializers.CharField()
    library_version = serializers.CharField()
    output_space = serializers.CharField(help_text="log_odds, probability, raw...")
    base_value = serializers.FloatField()
    attributions = serializers.DictField(
        child=serializers.FloatField(allow_null=True),
        help_text="Per feature, in schema order; null where the feature is masked from you.",
    )
    labels = serializers.DictField(child=serializers.CharField())
    top_features = serializers.ListField(child=serializers.CharField())
    quality = serializers.DictField(help_text="additivity_ok, additivity_error, ...")


class ExplanationSerializer(serializers.Serializer):
    shap = ShapSerializer()


class OriginalSerializer(serializers.Serializer):
    prediction = serializers.JSONField(help_text="As recorded.")
    score = serializers.FloatField(allow_null=True, help_text="As recorded.")
    model_prediction = serializers.JSONField(help_text="The model's, on the recorded inputs now.")
    model_score = serializers.FloatField(allow_null=True)
    inputs = serializers.DictField(help_text='"[masked]" where masked from you.')
    masked_features = serializers.ListField(child=serializers.CharField())
    explanation = ExplanationSerializer()


class WhatIfResponse(serializers.Serializer):
    decision = serializers.IntegerField()
    model = serializers.CharField()
    version = serializers.CharField()
    inputs = serializers.DictField(help_text="The inputs the model was run on.")
    changed = serializers.ListField(child=serializers.CharField())
    supplied_masked = serializers.ListField(
        child=serializers.CharField(), help_text="Masked features you gave a value for."
    )
    prediction = serializers.JSONField()
    score = serializers.FloatField(allow_null=True)
    explanation = ExplanationSerializer()
    original = OriginalSerializer()


class DecisionWhatIfView(APIView):
    @extend_schema(
        operation_id="decisions_what_if",
        summary="Try edited inputs on a decision's model (nothing stored; audited)",
        request=WhatIfRequest,
        responses={200: WhatIfResponse},
        examples=[
            OpenApiExample(
                "Lower debt ratio",
                value={"inputs": {"debt_ratio": 0.2, "prior_defaults": 0}},
                request_only=True,
            )
        ],
    )
    def post(self, request, decision_id: int):
        actor = roles.actor_for(request)
        actor.require(roles.WHAT_IF)  # before the lookup: refused, nothing is read
        decision = get_decision_for_actor(actor, decision_id)
        result = run_what_if(actor, decision, request.data, ip=client_ip(request), via="api")
        return Response(result.as_json())


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
    @takes_parameters(())
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
        refuse_unknown_fields(request.data, (), "counterfactuals request")  # it takes no body
        request_counterfactuals(actor, decision, ip=client_ip(request))
        return Response(
            {
                "id": decision.pk,
                "status": "pending",
                "status_url": f"/api/v1/decisions/{decision.pk}/counterfactuals",
            },
            status=202,
        )
