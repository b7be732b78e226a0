"""Monitoring pages."""

from django.urls import path

from auditapp.monitoring import views

urlpatterns = [
    path("monitoring/", views.dashboard, name="monitoring"),
    path(
        "monitoring/alerts/<int:alert_id>/acknowledge",
        views.acknowledge,
        name="monitoring-acknowledge",
    ),
    path(
        "models/<slug:name>/versions/<str:version>/monitoring/",
        views.version_monitoring,
        name="monitoring-version",
    ),
    path(
        "models/<slug:name>/versions/<str:version>/monitoring/compute",
        views.compute,
        name="monitoring-compute",
    ),
    path(
        "models/<slug:name>/versions/<str:version>/monitoring/settings",
        views.configure,
        name="monitoring-configure",
    ),
    path(
        "models/<slug:name>/versions/<str:version>/monitoring/computations/<int:snapshot_id>/",
        views.snapshot_detail,
        name="monitoring-snapshot",
    ),
]
