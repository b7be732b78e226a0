"""Model pages: the registry list and one version's card, history and figures."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.db.models.expressions import RawSQL
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from auditapp import pages
from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.approvals.models import Approval
from auditapp.errors import InvalidInput
from auditapp.pages import page, paginate, takes_query
from auditapp.registry.lookups import get_model_for_actor, get_version_for_actor
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.registry.services import set_four_eyes
from auditapp.replicas import replica_view

PAGE_SIZE = 20  # models per page (each a card with its versions) unless ?limit= says otherwise
# ?order=: by name (the default), or the most recently registered model first.
ORDERS = {"name": ("name",), "newest": ("-created_at", "-id")}


@login_required
@page
@takes_query("order", "page", "limit")
@replica_view  # lists a user reaches by browsing may lag (README: Deployment)
def model_list(request):
    actor = roles.actor_for(request)
    actor.require(roles.READ_MODELS)
    limit = pages.COUNT_LIMIT
    versions = ModelVersion.objects.annotate(
        decision_count=_decisions_counted_up_to(limit + 1)
    ).order_by("-created_at")
    order = request.GET.get("order") or "name"
    if order not in ORDERS:
        raise InvalidInput(
            "order must be name or newest.", details={"order": ["must be name or newest"]}
        )
    models = (
        RegisteredModel.objects.visible_to(actor)
        .select_related("owner")
        .prefetch_related(Prefetch("versions", queryset=versions))
        .order_by(*ORDERS[order])
    )
    pager = paginate(models, request.GET, per_page=PAGE_SIZE)
    context = {"models": pager.rows, "pager": pager, "order": order, "count_limit": limit}
    return render(request, "registry/model_list.html", context)


def _decisions_counted_up_to(limit: int) -> RawSQL:
    """A version's decisions counted up to `limit`: a subquery that stops there, where
    Count("decisions") read every decision of every version on the page (lists count up to
    pages.COUNT_LIMIT)."""
    decisions = ModelVersion._meta.get_field("decisions").related_model._meta.db_table
    # Identifiers we own, the limit a parameter (S608's reason, in pyproject.toml).
    return RawSQL(  # noqa: S611
        f"SELECT COUNT(*) FROM (SELECT 1 FROM {decisions} AS d "
        f"WHERE d.model_version_id = {ModelVersion._meta.db_table}.id LIMIT %s) AS capped",
        (limit,),
    )


@login_required
@page
def model_home(request, name: str):
    """/models/<name>/: the page of the version that decides (the newest in production),
    else of the newest version. A model the reader may not see is not found, as a missing one."""
    actor = roles.actor_for(request)
    model = get_model_for_actor(actor, name)
    versions = model.versions.order_by("-created_at", "-id")
    version = versions.filter(stage=ModelVersion.PRODUCTION).first() or versions.first()
    if version is None:  # registered, with no version yet: the list shows it
        return redirect("model-list")
    return redirect("model-version", name=model.name, version=version.version)


@login_required
@require_POST
@page
def four_eyes(request, name: str):
    """The version page's four-eyes button: on at once, off once a second person approves."""
    actor = roles.actor_for(request)
    model = get_model_for_actor(actor, name)
    version = get_version_for_actor(actor, name, request.POST.get("version", ""))
    enabled = {"on": True, "off": False}.get(request.POST.get("enabled", ""))
    changed = set_four_eyes(actor, model, enabled, ip=client_ip(request))
    if isinstance(changed, Approval):
        messages.info(
            request,
            f"Turning four-eyes off waits for a second person's approval (approval {changed.pk}).",
        )
    else:
        messages.success(
            request, f"Four-eyes approvals are {'on' if changed.four_eyes else 'off'}."
        )
    return redirect("model-version", name=name, version=version.version)
