from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "auditapp.registry"
    label = "registry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from auditapp.accounts import roles
        from auditapp.approvals import changes
        from auditapp.registry import (  # noqa: F401
            receivers,  # changes of models and versions change the configuration revision
            records,  # registers model versions and stage changes in the log
        )

        # The registry's changes that may wait for a second person (four-eyes).
        for name, label, function in (
            ("stage", "Stage change", "apply_approved_stage"),
            ("four_eyes", "Four-eyes off", "apply_approved_four_eyes"),
        ):
            changes.register(
                changes.ChangeKind(
                    name, label, roles.CHANGE_STAGE, f"auditapp.registry.services.{function}"
                )
            )
