from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "auditapp.monitoring"
    label = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from auditapp.accounts import roles
        from auditapp.approvals import changes
        from auditapp.monitoring import signals  # noqa: F401  (connects the receivers)

        # A production version's monitoring settings may wait for a second person.
        changes.register(
            changes.ChangeKind(
                "thresholds",
                "Monitoring settings",
                roles.CONFIGURE_MONITORING,
                "auditapp.monitoring.configuration.apply_approved_settings",
            )
        )
