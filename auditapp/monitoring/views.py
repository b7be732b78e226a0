"""Monitoring pages: the dashboard of every visible version, one version over time (with
its settings form), and one computation's figures."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Subquery
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST

from auditapp import charts
from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip
from auditapp.approvals.models import Approval
from auditapp.errors import InvalidInput, NotFound
from auditapp.monitoring import thresholds
from auditapp.monitoring.alerts import acknowledge_alert
from auditapp.monitoring.configuration import (
    configure_monitoring,
    deployment_settings,
    ensure_monitoring,
    rule_scope,
    settings_json,
    threshold_range,
    version_rules,
)
from auditapp.monitoring.coverage import Coverage, coverage, first_decision_at, first_decision_query
from auditapp.monitoring.documents import SnapshotDocument
from auditapp.monitoring.lookups import get_alert_for_actor
from auditapp.monitoring.metrics import favourable_class
from auditapp.monitoring.models import DAY, HOUR, WEEK, Alert, MetricSnapshot, MonitoringSettings
from auditapp.monitoring.snapshots import request_snapshot
from auditapp.pages import is_htmx, page, paginate, takes_query
from auditapp.registry.lookups import get_version_for_actor
from auditapp.registry.models import ModelVersion, RegisteredModel

SERIES_LENGTH = 60  # windows per chart
PERIOD_FORMATS = {HOUR: "%m-%d %H:00", DAY: "%Y-%m-%d", WEEK: "%G-W%V"}
PARTIAL_MARK = "*"  # after a partial window's label in the charts (the page explains it)
# The alert lists page (?page=, ?limit=) in ?order= (newest raised first by default).
ALERT_ORDERS = {"newest": ("-raised_at", "-id"), "oldest": ("raised_at", "id")}
ALERT_PARAMETERS = ("order", "page", "limit")
LOCAL_INPUT = "%Y-%m-%dT%H:%M"  # an <input type="datetime-local"> value (UTC on these pages)


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


def _summary(snapshot: MetricSnapshot | None, names: list[str], first_decision=None) -> dict | None:
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
        "coverage": coverage(snapshot, first_decision),
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
@takes_query(*ALERT_PARAMETERS)
def dashboard(request):
    actor = roles.actor_for(request)
    actor.require(roles.READ_MODELS)
    latest = MetricSnapshot.objects.filter(
        model_version=OuterRef("pk"), status=MetricSnapshot.DONE
    ).order_by("-window_start", "window")
    versions = list(
        ModelVersion.objects.filter(registered_model__in=RegisteredModel.objects.visible_to(actor))
        .select_related("registered_model")
        .annotate(
            latest_snapshot=Subquery(latest.values("pk")[:1]),
            first_decision_at=first_decision_query(),
        )
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
            (
                v,
                _summary(
                    snapshots.get(v.latest_snapshot), v.parsed_schema.names, v.first_decision_at
                ),
            )
            for v in versions
        ],
        "alerts": alerts.rows,
        "alerts_pager": alerts,
        "can_acknowledge": actor.can(roles.ACKNOWLEDGE_ALERTS),
    }
    return render(request, "monitoring/dashboard.html", context)


def _label(snapshot: MetricSnapshot) -> str:
    return snapshot.window_start.strftime(PERIOD_FORMATS.get(snapshot.window, "%Y-%m-%d %H:%M"))


@dataclass(frozen=True)
class Window:
    """A computed snapshot as the version page reads it."""

    snapshot: MetricSnapshot
    document: SnapshotDocument
    coverage: Coverage | None

    @property
    def label(self) -> str:
        partial = self.coverage is not None and self.coverage.partial
        return _label(self.snapshot) + (PARTIAL_MARK if partial else "")


def _windows(snapshots: list[MetricSnapshot], first_decision) -> list[Window]:
    return [
        Window(s, SnapshotDocument.from_document(s.data), coverage(s, first_decision))
        for s in snapshots
    ]


def _series(windows: list[Window], pick) -> list[tuple[str, float | None]]:
    return [(w.label, pick(w.document)) for w in windows]


def _figures(model_version, windows: list[Window]) -> dict:
    schema = model_version.parsed_schema
    labels = {f.name: f.label for f in schema.features}
    latest = windows[-1] if windows else None
    document = latest.document if latest else SnapshotDocument()
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
    if latest and histogram:
        figures["score_histogram"] = charts.histogram(
            histogram.counts,
            histogram.edges,
            title=f"Score distribution, {latest.label}",
            x_label="score",
        )
    shap = document.attribution_drift.mean_abs_shap if document.attribution_drift else {}
    if latest and shap:
        figures["importance"] = charts.bar_chart(
            [(labels.get(n, n), e.change) for n, e in shap.items()],
            title=f"Change of mean |SHAP| against the reference, {latest.label}",
            value_label="change of mean |SHAP|",
            legend=("More important now", "Less important now"),
        )
    return figures


def _has_odds(document: SnapshotDocument) -> bool:
    return any(e.equalized_odds_difference is not None for e in document.fairness.values())


def _odds(windows: list[Window], names: list[str]) -> dict | None:
    """Equalised odds needs outcomes, which come weeks after the decisions: when the
    latest window has none, the latest window of the series that has them, with its date."""
    if not windows or not windows[-1].document.fairness or _has_odds(windows[-1].document):
        return None
    found = next((w for w in reversed(windows) if _has_odds(w.document)), None)
    if found is None:
        return {
            "window": None,
            "searched": len(windows),
            "all_searched": len(windows) < SERIES_LENGTH,
        }
    performance = found.document.performance
    return {
        "window": found,
        "outcomes": performance.outcomes if performance else 0,
        "rows": [
            (name, entry.equalized_odds_difference)
            for name, entry in _ordered(found.document.fairness, names)
        ],
    }


# --- the settings form -------------------------------------------------------------------


@dataclass
class Field:
    """One input of the settings form: its name is the API body's field (configuration.py
    names the same field in its reasons), its value as typed, its reasons if refused."""

    name: str
    label: str
    value: Any = ""
    errors: list[str] = field(default_factory=list)
    note: str = ""


def _group_features(schema) -> list:
    return [f for f in schema.features if f.protected and f.type in ("numeric", "integer")]


def _local(moment) -> str:
    return moment.strftime(LOCAL_INPUT) if moment else ""


def _shown(number: float) -> str:
    """A stored number as the form shows it: short, yet read back as the same number (a
    form saved for another field must not round a threshold set through the API)."""
    short = f"{number:g}"
    return short if float(short) == number else repr(number)


def _settings_form(
    model_version, config: MonitoringSettings, rules: list, posted=None, errors=None
) -> dict:
    """The form's fields with the stored values, or with the posted ones and their reasons."""
    schema = model_version.parsed_schema
    all_errors = dict(errors or {})
    errors = dict(all_errors)

    def value(name: str, stored: Any) -> Any:
        return posted.get(name, "") if posted is not None else stored

    def make(name: str, label: str, stored: Any, note: str = "") -> Field:
        return Field(name, label, value(name, stored), errors.pop(name, []), note)

    groups = config.fairness_groups or {}
    default_class = favourable_class(schema, None)
    own = [r for r in rules if rule_scope(r) == "version"]
    form = {
        "reference": make("reference", "Compared against", config.reference_kind),
        "reference_from": make(
            "reference_from", "Period from (UTC)", _local(config.reference_start)
        ),
        "reference_to": make("reference_to", "Period to (UTC)", _local(config.reference_end)),
        "favourable_class": make(
            "favourable_class",
            "Favourable class",
            "" if config.favourable_class is None else str(config.favourable_class),
        ),
        "default_class": default_class,
        "classes": [str(c) for c in schema.target.classes],
        "groups": [
            make(
                f"fairness_groups.{f.name}",
                f"{f.label} groups (edges)",
                ", ".join(_shown(e) for e in groups[f.name]) if f.name in groups else "",
                "e.g. 25, 40, 60; empty: the schema's groups or the reference's quartiles",
            )
            for f in _group_features(schema)
        ],
        "rules": [
            {
                "rule": r,
                "threshold": make(f"rules.{r.pk}.threshold", "Threshold", _shown(r.threshold)),
                "enabled": Field(
                    f"rules.{r.pk}.enabled",
                    "Enabled",
                    (f"rules.{r.pk}.enabled" in posted) if posted is not None else r.enabled,
                    errors.pop(f"rules.{r.pk}.enabled", []),
                ),
                "allowed": _allowed(*threshold_range(r.metric)),
            }
            for r in own
        ],
        "shared_rules": [r for r in rules if rule_scope(r) != "version"],
    }
    form["errors"] = all_errors  # every reason, above the form; each input's beside it too
    return form


def _allowed(low: float, high: float) -> str:
    return f"from {low:g}" if math.isinf(high) else f"{low:g} to {high:g}"


def _number(text: str) -> Any:
    """A number typed in the form; text that is none stays text, for the shared
    validation (configuration.py) to refuse with its reason."""
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _settings_body(post, model_version, config: MonitoringSettings, rules: list) -> dict:
    """The form's fields as the API's PUT body: validation is the API's (configuration.py).
    A moment left as the form showed it is the stored one (the input holds minutes only)."""
    schema = model_version.parsed_schema
    body: dict[str, Any] = {"reference": post.get("reference", "")}
    if body["reference"] == MonitoringSettings.PERIOD:
        for name, stored in (
            ("reference_from", config.reference_start),
            ("reference_to", config.reference_end),
        ):
            typed = post.get(name, "")
            kept = stored is not None and typed == _local(stored)
            body[name] = stored.isoformat() if kept else _moment(typed)
    if "favourable_class" in post:
        chosen = post["favourable_class"]
        body["favourable_class"] = schema.target.label_from_text(chosen) if chosen else None
    groups = {}
    for feature in _group_features(schema):
        text = post.get(f"fairness_groups.{feature.name}", "").strip()
        if text:
            groups[feature.name] = [_number(t) for t in text.replace(";", ",").split(",")]
    body["fairness_groups"] = groups
    body["rules"] = [
        {
            "id": r.pk,
            "threshold": _number(post.get(f"rules.{r.pk}.threshold", "")),
            "enabled": f"rules.{r.pk}.enabled" in post,
        }
        for r in rules
        if rule_scope(r) == "version" and f"rules.{r.pk}.threshold" in post
    ]
    return body


# --- the version page --------------------------------------------------------------------


def _version_context(request, actor, model_version, posted=None, errors=None) -> dict:
    window = request.GET.get("window") or DAY
    if window not in PERIOD_FORMATS:
        windows = ", ".join(PERIOD_FORMATS)
        raise InvalidInput.named("window", f"must be one of {windows}", code="invalid_parameters")
    snapshots = list(
        MetricSnapshot.objects.filter(
            model_version=model_version, window=window, status=MetricSnapshot.DONE
        ).order_by("-window_start")[:SERIES_LENGTH]
    )[::-1]
    config = MonitoringSettings.objects.filter(model_version=model_version).first()
    names = model_version.parsed_schema.names
    first = first_decision_at(model_version)
    windows = _windows(snapshots, first)
    latest_data = windows[-1].document if windows else SnapshotDocument()
    alerts = _alerts_page(
        model_version.alerts.select_related("model_version__registered_model", "acknowledged_by"),
        request.GET,
        per_page=20,
    )
    recent = list(model_version.metric_snapshots.order_by("-created_at")[:10])
    can_configure = actor.can(roles.CONFIGURE_MONITORING)
    rules = version_rules(model_version) if config else []
    return {
        "model_version": model_version,
        "window": window,
        "windows": list(PERIOD_FORMATS),
        "snapshots": snapshots,
        "latest": _summary(snapshots[-1], names, first) if snapshots else None,
        "latest_data": latest_data,
        "drift_rows": _ordered(latest_data.drift, names),
        "fairness_rows": _ordered(latest_data.fairness, names),
        "odds": _odds(windows, names),
        "awaiting_outcomes": not latest_data.performance,
        "any_partial": any(w.coverage and w.coverage.partial for w in windows),
        "partial_mark": PARTIAL_MARK,
        "figures": _figures(model_version, windows),
        "alerts": alerts.rows,
        "alerts_pager": alerts,
        "recent": [(s, coverage(s, first)) for s in recent],
        "settings": settings_json(config, rules) if config else None,
        "rules": rules,
        "deployment": deployment_settings(),
        "settings_form": (
            _settings_form(model_version, config, rules, posted, errors)
            if config and can_configure
            else None
        ),
        "can_run": actor.can(roles.RUN_MONITORING),
        "can_acknowledge": actor.can(roles.ACKNOWLEDGE_ALERTS),
        "can_configure": can_configure,
    }


@login_required
@page
@takes_query("window", *ALERT_PARAMETERS)
def version_monitoring(request, name: str, version: str):
    actor = roles.actor_for(request)
    model_version = get_version_for_actor(actor, name, version)
    context = _version_context(request, actor, model_version)
    return render(request, "monitoring/version.html", context)


@login_required
@require_POST
@page
def configure(request, name: str, version: str):
    """The settings form: the API's PUT .../monitoring/settings, from the page."""
    actor = roles.actor_for(request)
    model_version = get_version_for_actor(actor, name, version)
    actor.require(roles.CONFIGURE_MONITORING)  # before reading anything of the form
    config = ensure_monitoring(model_version)
    body = _settings_body(request.POST, model_version, config, version_rules(model_version))
    try:
        saved = configure_monitoring(actor, model_version, body, ip=client_ip(request))
    except InvalidInput as exc:
        errors = exc.details if isinstance(exc.details, dict) else {"settings": [exc.message]}
        context = _version_context(request, actor, model_version, request.POST, errors)
        return render(request, "monitoring/version.html", context, status=400)
    if isinstance(saved, Approval):
        messages.info(
            request,
            f"This version is in production under four-eyes: the change waits for a second "
            f"person's approval (approval {saved.pk}, on the Approvals page).",
            extra_tags="settings",
        )
    else:
        messages.success(
            request,
            "Monitoring settings saved; windows computed from now on use them.",
            extra_tags="settings",
        )
    url = reverse("monitoring-version", kwargs={"name": name, "version": version})
    return redirect(f"{url}#settings")


@login_required
@require_POST
@page
def compute(request, name: str, version: str):
    actor = roles.actor_for(request)
    model_version = get_version_for_actor(actor, name, version)
    period = {"from": _moment(request.POST.get("from")), "to": _moment(request.POST.get("to"))}
    snapshot = request_snapshot(actor, model_version, period, ip=client_ip(request))
    messages.info(
        request,
        f"Computing the {snapshot.window} window from {snapshot.window_start:%Y-%m-%d %H:%M} "
        f"to {snapshot.window_end:%Y-%m-%d %H:%M} UTC.",
    )
    return redirect("monitoring-snapshot", name=name, version=version, snapshot_id=snapshot.pk)


def _moment(value: str | None) -> str | None:
    """An <input type="datetime-local"> value is UTC on this page (it says so)."""
    if not value:
        return value
    return value if value.endswith("Z") or "+" in value else value + "Z"


# --- one computation ---------------------------------------------------------------------


def _snapshot_context(model_version, snapshot: MetricSnapshot) -> dict:
    schema = model_version.parsed_schema
    labels = {f.name: f.label for f in schema.features}
    document = SnapshotDocument.from_document(snapshot.data)
    finished = snapshot.status in (MetricSnapshot.DONE, MetricSnapshot.FAILED)
    return {
        "model_version": model_version,
        "snapshot": snapshot,
        "finished": finished,
        "document": document,
        "coverage": coverage(snapshot, first_decision_at(model_version)) if finished else None,
        "drift_rows": [(labels.get(n, n), e) for n, e in _ordered(document.drift, schema.names)],
        "drifted": [
            labels.get(n, n) for n, e in _ordered(document.drift, schema.names) if e.drifted
        ],
        "fairness_rows": [
            (labels.get(n, n), e) for n, e in _ordered(document.fairness, schema.names)
        ],
        "shap_rows": sorted(
            (
                (labels.get(n, n), e)
                for n, e in (
                    document.attribution_drift.mean_abs_shap if document.attribution_drift else {}
                ).items()
            ),
            key=lambda row: -abs(row[1].change),
        ),
        "url": reverse(
            "monitoring-snapshot",
            kwargs={
                "name": model_version.registered_model.name,
                "version": model_version.version,
                "snapshot_id": snapshot.pk,
            },
        ),
    }


@login_required
@page
def snapshot_detail(request, name: str, version: str, snapshot_id: int):
    """One computation's figures (a custom period's among them); while it is pending or
    running, htmx asks for the figures again every second until they are there."""
    actor = roles.actor_for(request)
    model_version = get_version_for_actor(actor, name, version)
    snapshot = MetricSnapshot.objects.filter(pk=snapshot_id, model_version=model_version).first()
    if snapshot is None:
        raise NotFound("No such computation for this version.")
    context = _snapshot_context(model_version, snapshot)
    template = "monitoring/_snapshot.html" if is_htmx(request) else "monitoring/snapshot.html"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


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
