from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "auditapp.monitoring"
    label = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from auditapp.monitoring import signals  # noqa: F401  (connects the receivers)
