"""Monitoring API (API.md: Monitoring). Thin: parse, ask roles, call a service, answer."""

from __future__ import annotations

from datetime import datetime

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.approvals.api import pending_response
from auditapp.approvals.models import Approval
from auditapp.errors import InvalidInput
from auditapp.filtering import (
    newest_first_page,
    paging_parameters,
    refuse_empty_period,
    refuse_more_rows_than,
    refuse_unknown_fields,
    takes_parameters,
)
from auditapp.monitoring.alerts import acknowledge_alert, alert_json, load_alert
from auditapp.monitoring.configuration import configure_monitoring, settings_json
from auditapp.monitoring.coverage import coverage, first_decision_at
from auditapp.monitoring.documents import SnapshotDocument
from auditapp.monitoring.lookups import get_alert_for_actor
from auditapp.monitoring.models import WINDOWS, Alert, MetricSnapshot, MonitoringSettings
from auditapp.monitoring.snapshots import request_snapshot
from auditapp.monitoring.windows import parse_moment
from auditapp.registry.lookups import get_version_for_actor, refuse_unseen_model_filter

MAX_SNAPSHOTS = 1000
MAX_ALERTS = 500  # alerts a page unless ?limit= says otherwise
WINDOW_NAMES = [w for w, _ in WINDOWS]
STATE_NAMES = [s for s, _ in Alert.STATES]


def snapshot_json(snapshot: MetricSnapshot, first_decision: datetime | None = None) -> dict:
    """A snapshot as API.md shows it; a pending one's sections are empty. `coverage` is the
    part of the window its figures cover (`partial` when the version's first decision came
    after the window began, `first_decision` here, or it was computed before it ended);
    null until computed."""
    document = SnapshotDocument.from_document(snapshot.data).as_document()
    covered = coverage(snapshot, first_decision)
    return {
        "id": snapshot.pk,
        "window": snapshot.window,
        "window_start": snapshot.window_start.isoformat(),
        "window_end": snapshot.window_end.isoformat(),
        "status": snapshot.status,
        "error": snapshot.error or None,
        "computed_at": snapshot.computed_at.isoformat() if snapshot.computed_at else None,
        "decisions": snapshot.decisions,
        "coverage": covered.as_json() if covered else None,
        "reference": document["reference"],
        "drift": document["drift"],
        "score_drift": document["score_drift"],
        "prediction_drift": document["prediction_drift"],
        "attribution_drift": document["attribution_drift"],
        "performance": document["performance"],
        "fairness": document["fairness"],
        "explanations": document["explanations"],
    }


def monitoring_url(model_version) -> str:
    return reverse(
        "api-monitoring", args=[model_version.registered_model.name, model_version.version]
    )


SNAPSHOT_PARAMETERS = [
    OpenApiParameter("window", str, enum=WINDOW_NAMES, description="default: day"),
    OpenApiParameter("from", OpenApiTypes.DATETIME),
    OpenApiParameter("to", OpenApiTypes.DATETIME),
]
ALERT_PARAMETERS = [
    OpenApiParameter("model", str),
    OpenApiParameter("version", str),
    OpenApiParameter("state", str, enum=[*STATE_NAMES, "active"]),
    *paging_parameters(MAX_ALERTS),
]


class MonitoringView(APIView):
    @extend_schema(
        operation_id="monitoring_snapshots",
        parameters=SNAPSHOT_PARAMETERS,
        responses=OpenApiTypes.OBJECT,
    )
    @takes_parameters(SNAPSHOT_PARAMETERS)
    def get(self, request, name: str, version: str):
        model_version = get_version_for_actor(roles.actor_for(request), name, version)
        window = request.query_params.get("window", "day")
        if window not in WINDOW_NAMES:
            raise InvalidInput.named("window", f"must be one of {WINDOW_NAMES}")
        snapshots = MetricSnapshot.objects.filter(model_version=model_version, window=window)
        params = request.query_params
        start = parse_moment(params["from"], "from") if params.get("from") else None
        end = parse_moment(params["to"], "to") if params.get("to") else None
        refuse_empty_period(start, end)
        if start is not None:
            snapshots = snapshots.filter(window_end__gt=start)
        if end is not None:
            snapshots = snapshots.filter(window_start__lt=end)
        snapshots = snapshots.order_by("window_start", "window_end")
        refuse_more_rows_than(snapshots, MAX_SNAPSHOTS, "period (narrow it with from and to)")
        snapshots = snapshots[:MAX_SNAPSHOTS]
        first = first_decision_at(model_version)
        return Response({"results": [snapshot_json(s, first) for s in snapshots]})

    @extend_schema(
        operation_id="monitoring_compute",
        request=OpenApiTypes.OBJECT,
        responses={202: OpenApiTypes.OBJECT},
    )
    def post(self, request, name: str, version: str):
        actor = roles.actor_for(request)
        model_version = get_version_for_actor(actor, name, version)
        snapshot = request_snapshot(actor, model_version, request.data, ip=client_ip(request))
        url = monitoring_url(model_version) + f"?window={snapshot.window}"
        return Response(
            {
                "id": snapshot.pk,
                "status": snapshot.status,
                "window": snapshot.window,
                "window_start": snapshot.window_start.isoformat(),
                "window_end": snapshot.window_end.isoformat(),
                "status_url": url,
                "page_url": reverse(
                    "monitoring-snapshot",
                    kwargs={"name": name, "version": version, "snapshot_id": snapshot.pk},
                ),
            },
            status=202,
        )


class MonitoringSettingsView(APIView):
    @extend_schema(operation_id="monitoring_settings", responses=OpenApiTypes.OBJECT)
    @takes_parameters(())
    def get(self, request, name: str, version: str):
        model_version = get_version_for_actor(roles.actor_for(request), name, version)
        config, _ = MonitoringSettings.objects.get_or_create(model_version=model_version)
        return Response(settings_json(config))

    @extend_schema(
        operation_id="monitoring_settings_update",
        request=OpenApiTypes.OBJECT,
        responses=OpenApiTypes.OBJECT,
    )
    def put(self, request, name: str, version: str):
        actor = roles.actor_for(request)
        model_version = get_version_for_actor(actor, name, version)
        config = configure_monitoring(actor, model_version, request.data, ip=client_ip(request))
        if isinstance(config, Approval):
            return pending_response(config)
        return Response(settings_json(config))


class AlertListView(APIView):
    @extend_schema(
        operation_id="alerts_list", parameters=ALERT_PARAMETERS, responses=OpenApiTypes.OBJECT
    )
    @takes_parameters(ALERT_PARAMETERS)
    def get(self, request):
        actor = roles.actor_for(request)
        actor.require(roles.READ_MODELS)
        alerts = Alert.objects.visible_to(actor).select_related(
            "rule", "snapshot", "acknowledged_by", "model_version__registered_model"
        )
        params = request.query_params
        if params.get("model"):
            alerts = alerts.filter(model_version__registered_model__name=params["model"])
        if params.get("version"):
            alerts = alerts.filter(model_version__version=params["version"])
        state = params.get("state")
        if state == "active":
            alerts = alerts.active()
        elif state:
            if state not in STATE_NAMES:
                raise InvalidInput.named("state", f"must be one of {[*STATE_NAMES, 'active']}")
            alerts = alerts.filter(state=state)
        page, next_cursor = newest_first_page(alerts, params, default=MAX_ALERTS)
        if not page:
            refuse_unseen_model_filter(actor, params)
        return Response({"results": [alert_json(a) for a in page], "next": next_cursor})


class AlertAcknowledgeView(APIView):
    @extend_schema(operation_id="alerts_acknowledge", request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request, alert_id: int):
        actor = roles.actor_for(request)
        alert = get_alert_for_actor(actor, alert_id)
        refuse_unknown_fields(request.data, (), "acknowledgement")  # it takes no body
        alert = acknowledge_alert(actor, alert, ip=client_ip(request))
        return Response(alert_json(load_alert(alert.pk)))
