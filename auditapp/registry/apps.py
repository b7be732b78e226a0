from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "auditapp.registry"
    label = "registry"
    verbose_name = "Model registry"
