from django.apps import AppConfig


class DecisionsConfig(AppConfig):
    name = "auditapp.decisions"
    label = "decisions"
    verbose_name = "Decisions"
