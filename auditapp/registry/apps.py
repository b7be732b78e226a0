from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "auditapp.registry"
    label = "registry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from auditapp.registry import (  # noqa: F401
            receivers,  # changes of models and versions change the configuration revision
            records,  # registers model versions and stage changes in the log
        )
