"""Monitoring pages: the dashboard of every visible version, and one version over time."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Subquery
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from auditapp import charts
from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.errors import InvalidInput
from auditapp.monitoring import thresholds
from auditapp.monitoring.alerts import acknowledge_alert
from auditapp.monitoring.configuration import settings_json
from auditapp.monitoring.documents import SnapshotDocument
from auditapp.monitoring.lookups import get_alert_for_actor
from auditapp.monitoring.models import DAY, HOUR, WEEK, Alert, MetricSnapshot, MonitoringSettings
from auditapp.monitoring.snapshots import request_snapshot
from auditapp.pages import page, paginate
from auditapp.registry.lookups import get_version_for_actor
from auditapp.registry.models import ModelVersion, RegisteredModel

SERIES_LENGTH = 60  # windows per chart
PERIOD_FORMATS = {HOUR: "%m-%d %H:00", DAY: "%Y-%m-%d", WEEK: "%G-W%V"}
# The alert lists page (?page=, ?limit=) in ?order= (newest raised first by default).
ALERT_ORDERS = {"newest": ("-raised_at", "-id"), "oldest": ("raised_at", "id")}


def _alerts_page(alerts, params, per_page: int):
    """A page of alerts with its total (auditapp.pages.paginate), in ?order=."""
    order = params.get("order") or "newest"
    if order not in ALERT_ORDERS:
        raise InvalidInput(
            "order must be newest or oldest.", details={"order": ["must be newest or oldest"]}
        )
    return paginate(alerts.order_by(*ALERT_ORDERS[order]), params, per_page=per_page)


def _ordered(entries: dict, names: list[str]) -> list[tuple[str, Any]]:
    """Per-feature entries in schema order (PostgreSQL's jsonb keeps its own key order)."""
    return [(name, entries[name]) for name in names if name in entries]


def _summary(snapshot: MetricSnapshot | None, names: list[str]) -> dict | None:
    """The figures a dashboard row shows, from a snapshot's document."""
    if snapshot is None:
        return None
    document = SnapshotDocument.from_document(snapshot.data)
    drift = [(e.psi, name) for name, e in document.drift.items() if e.psi]
    fairness = [
        (e.disparate_impact_ratio, name)
        for name, e in document.fairness.items()
        if e.disparate_impact_ratio is not None
    ]
    return {
        "snapshot": snapshot,
        "drifted": [n for n, e in _ordered(document.drift, names) if e.drifted],
        "max_psi": max(drift) if drift else None,
        "score_psi": document.score_psi,
        "roc_auc": document.performance_figure("roc_auc"),
        "min_di": min(fairness) if fairness else None,
        "min_di_fails": bool(fairness) and min(fairness)[0] < thresholds.FOUR_FIFTHS,
        "failure_rate": document.failure_rate,
        "ndcg": document.ranking_ndcg,
    }


@login_required
@page
def dashboard(request):
    actor = roles.actor_for(request)
    actor.require(roles.READ_MODELS)
    latest = MetricSnapshot.objects.filter(
        model_version=OuterRef("pk"), status=MetricSnapshot.DONE
    ).order_by("-window_start", "window")
    versions = list(
        ModelVersion.objects.filter(registered_model__in=RegisteredModel.objects.visible_to(actor))
        .select_related("registered_model")
        .annotate(latest_snapshot=Subquery(latest.values("pk")[:1]))
        .order_by("registered_model__name", "-created_at")
    )
    snapshots = MetricSnapshot.objects.in_bulk(
        [v.latest_snapshot for v in versions if v.latest_snapshot]
    )
    alerts = _alerts_page(
        Alert.objects.visible_to(actor)
        .active()
        .select_related("model_version__registered_model", "acknowledged_by"),
        request.GET,
        per_page=50,
    )
    context = {
        "rows": [
            (v, _summary(snapshots.get(v.latest_snapshot), v.parsed_schema.names)) for v in versions
        ],
        "alerts": alerts.rows,
        "alerts_pager": alerts,
        "can_acknowledge": actor.can(roles.ACKNOWLEDGE_ALERTS),
    }
    return render(request, "monitoring/dashboard.html", context)


def _label(snapshot: MetricSnapshot) -> str:
    return snapshot.window_start.strftime(PERIOD_FORMATS.get(snapshot.window, "%Y-%m-%d %H:%M"))


Window = tuple[MetricSnapshot, SnapshotDocument]


def _windows(snapshots: list[MetricSnapshot]) -> list[Window]:
    return [(s, SnapshotDocument.from_document(s.data)) for s in snapshots]


def _series(windows: list[Window], pick) -> list[tuple[str, float | None]]:
    return [(_label(snapshot), pick(document)) for snapshot, document in windows]


def _figures(model_version, windows: list[Window]) -> dict:
    schema = model_version.parsed_schema
    labels = {f.name: f.label for f in schema.features}
    latest, document = windows[-1] if windows else (None, SnapshotDocument())
    by_psi = sorted(schema.names, key=lambda n: -(document.feature_psi(n) or 0.0))
    figures = {
        "drift": [  # the most drifted in the latest window first (each chart has its scale)
            charts.time_series(
                _series(windows, lambda d, n=name: d.feature_psi(n)),
                title=f"Drift of {labels[name]} (PSI against the reference)",
                y_label="PSI",
            )
            for name in by_psi
        ],
        "latest_psi": charts.bar_chart(
            [(labels[n], document.feature_psi(n)) for n in by_psi] if latest else [],
            title=(
                "Input drift per feature in the latest window "
                f"(PSI; above {thresholds.PSI_SHIFT:g} is a shift)"
            ),
            value_label="PSI",
            signed=False,
        ),
        "score_median": charts.time_series(
            _series(windows, lambda d: d.median_score),
            title="Median score per window",
            y_label="median score",
        ),
        "score_psi": charts.time_series(
            _series(windows, lambda d: d.score_psi),
            title="Score drift (PSI against the reference)",
            y_label="PSI",
        ),
        "ndcg": charts.time_series(
            _series(windows, lambda d: d.ranking_ndcg),
            title="Attribution ranking kept (NDCG against the reference; 1 = same order)",
            y_label="NDCG",
        ),
        "roc_auc": charts.time_series(
            _series(windows, lambda d: d.performance_figure("roc_auc")),
            title="ROC AUC on decisions with an outcome",
            y_label="ROC AUC",
        ),
        "accuracy": charts.time_series(
            _series(windows, lambda d: d.performance_figure("accuracy")),
            title="Accuracy on decisions with an outcome",
            y_label="accuracy",
        ),
        "fairness": [
            charts.time_series(
                _series(windows, lambda d, n=f.name: d.disparate_impact(n)),
                title=(
                    f"Disparate impact ratio by {f.label} "
                    f"(below {thresholds.FOUR_FIFTHS:g} fails the four-fifths rule)"
                ),
                y_label="ratio",
            )
            for f in schema.features
            if f.protected
        ],
        "score_histogram": None,
        "importance": None,
    }
    histogram = document.score_drift.current.histogram if document.score_drift else None
    if histogram:
        figures["score_histogram"] = charts.histogram(
            histogram.counts,
            histogram.edges,
            title=f"Score distribution, {_label(latest)}",
            x_label="score",
        )
    shap = document.attribution_drift.mean_abs_shap if document.attribution_drift else {}
    if shap:
        figures["importance"] = charts.bar_chart(
            [(labels.get(n, n), e.change) for n, e in shap.items()],
            title=f"Change of mean |SHAP| against the reference, {_label(latest)}",
            value_label="change of mean |SHAP|",
            legend=("More important now", "Less important now"),
        )
    return figures


@login_required
@page
def version_monitoring(request, name: str, version: str):
    actor = roles.actor_for(request)
    model_version = get_version_for_actor(actor, name, version)
    window = request.GET.get("window", DAY)
    if window not in PERIOD_FORMATS:
        window = DAY
    snapshots = list(
        MetricSnapshot.objects.filter(
            model_version=model_version, window=window, status=MetricSnapshot.DONE
        ).order_by("-window_start")[:SERIES_LENGTH]
    )[::-1]
    config = MonitoringSettings.objects.filter(model_version=model_version).first()
    names = model_version.parsed_schema.names
    windows = _windows(snapshots)
    latest_data = windows[-1][1] if windows else SnapshotDocument()
    alerts = _alerts_page(
        model_version.alerts.select_related("model_version__registered_model", "acknowledged_by"),
        request.GET,
        per_page=20,
    )
    context = {
        "model_version": model_version,
        "window": window,
        "windows": list(PERIOD_FORMATS),
        "snapshots": snapshots,
        "latest": _summary(snapshots[-1], names) if snapshots else None,
        "latest_data": latest_data,
        "drift_rows": _ordered(latest_data.drift, names),
        "fairness_rows": _ordered(latest_data.fairness, names),
        "figures": _figures(model_version, windows),
        "alerts": alerts.rows,
        "alerts_pager": alerts,
        "recent": model_version.metric_snapshots.order_by("-created_at")[:10],
        "settings": settings_json(config) if config else None,
        "can_run": actor.can(roles.RUN_MONITORING),
        "can_acknowledge": actor.can(roles.ACKNOWLEDGE_ALERTS),
    }
    return render(request, "monitoring/version.html", context)


@login_required
@require_POST
@page
def compute(request, name: str, version: str):
    actor = roles.actor_for(request)
    model_version = get_version_for_actor(actor, name, version)
    period = {"from": _moment(request.POST.get("from")), "to": _moment(request.POST.get("to"))}
    snapshot = request_snapshot(actor, model_version, period, ip=client_ip(request))
    messages.info(
        request, f"Computing the {snapshot.window} from {snapshot.window_start:%Y-%m-%d %H:%M} UTC."
    )
    return redirect("monitoring-version", name=name, version=version)


def _moment(value: str | None) -> str | None:
    """An <input type="datetime-local"> value is UTC on this page (it says so)."""
    if not value:
        return value
    return value if value.endswith("Z") or "+" in value else value + "Z"


@login_required
@require_POST
@page
def acknowledge(request, alert_id: int):
    actor = roles.actor_for(request)
    alert = get_alert_for_actor(actor, alert_id)
    acknowledge_alert(actor, alert, ip=client_ip(request))
    target = request.POST.get("next", "")
    if not target.startswith("/") or target.startswith("//"):
        target = "/monitoring/"
    return redirect(target)
