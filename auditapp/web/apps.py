from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "auditapp.web"
    label = "web"
    verbose_name = "Web pages"
