"""Monitoring API routes, mounted under /api/v1/ (API.md: Monitoring)."""

from django.urls import path

from auditapp.monitoring import api

urlpatterns = [
    path(
        "models/<slug:name>/versions/<str:version>/monitoring",
        api.MonitoringView.as_view(),
        name="api-monitoring",
    ),
    path(
        "models/<slug:name>/versions/<str:version>/monitoring/settings",
        api.MonitoringSettingsView.as_view(),
        name="api-monitoring-settings",
    ),
    path("alerts", api.AlertListView.as_view(), name="api-alerts"),
    path(
        "alerts/<int:alert_id>/acknowledge",
        api.AlertAcknowledgeView.as_view(),
        name="api-alert-acknowledge",
    ),
]
