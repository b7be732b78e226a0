from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "auditapp.serving"
    label = "serving"
    verbose_name = "Serving"
