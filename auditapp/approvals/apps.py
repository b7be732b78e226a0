from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "auditapp.approvals"
    label = "approvals"
    verbose_name = "Four-eyes approvals"

    def ready(self) -> None:
        from auditapp.approvals import records  # noqa: F401  (registers approvals in the log)
