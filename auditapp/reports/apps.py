from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "auditapp.reports"
    label = "reports"
    verbose_name = "Reports"

    def ready(self) -> None:
        from auditapp.reports import copies  # noqa: F401 - registers notices' files (erasure)
