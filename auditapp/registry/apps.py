from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "auditapp.registry"
    label = "registry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from auditapp.registry import records  # noqa: F401  (registers model versions and stage changes in the log)
