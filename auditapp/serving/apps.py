from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "auditapp.serving"
    label = "serving"
    verbose_name = "Serving"

    def ready(self) -> None:
        from auditapp.accounts import roles
        from auditapp.approvals import changes
        from auditapp.serving import receivers  # noqa: F401  (a new policy: a new revision)

        # Serving's changes that may wait for a second person (four-eyes).
        changes.register(
            changes.ChangeKind(
                "traffic",
                "Traffic policy",
                roles.CHANGE_TRAFFIC,
                "auditapp.serving.services.apply_approved_traffic",
            )
        )
        changes.register(
            changes.ChangeKind(
                "promote",
                "Promotion",
                roles.CHANGE_STAGE,
                "auditapp.serving.compare.apply_approved_promotion",
            )
        )
