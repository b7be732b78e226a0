"""Model pages: the registry list and one version's card, history and figures."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Prefetch
from django.shortcuts import render

from auditapp.accounts import roles
from auditapp.pages import page
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.replicas import replica_view


@login_required
@page
@replica_view  # lists a user reaches by browsing may lag (README: Deployment)
def model_list(request):
    actor = roles.actor_for(request)
    actor.require(roles.READ_MODELS)
    versions = ModelVersion.objects.annotate(decision_count=Count("decisions")).order_by(
        "-created_at"
    )
    models = (
        RegisteredModel.objects.visible_to(actor)
        .select_related("owner")
        .prefetch_related(Prefetch("versions", queryset=versions))
    )
    return render(request, "registry/model_list.html", {"models": models})
