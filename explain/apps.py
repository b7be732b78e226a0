from django.apps import AppConfig


class ExplainConfig(AppConfig):
    name = "explain"
    label = "explain"
    verbose_name = "Explanations"
