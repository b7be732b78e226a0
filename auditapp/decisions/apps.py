from django.apps import AppConfig


class DecisionsConfig(AppConfig):
    name = "auditapp.decisions"
    label = "decisions"
    verbose_name = "Decisions"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from auditapp.decisions import records  # noqa: F401  (registers the outcome kind)
        from auditapp.decisions.services import clear_version_cache
        from auditapp.registry.models import ModelVersion

        post_save.connect(clear_version_cache, sender=ModelVersion, dispatch_uid="version-cache")
