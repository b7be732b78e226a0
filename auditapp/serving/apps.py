from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "auditapp.serving"
    label = "serving"
    verbose_name = "Serving"

    def ready(self) -> None:
        from auditapp.serving import receivers  # noqa: F401  (a new policy: a new revision)
