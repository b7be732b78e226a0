from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "auditapp.demo"
    label = "demo"
    verbose_name = "Demo data"
