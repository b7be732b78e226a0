from django.apps import AppConfig


class ExplainConfig(AppConfig):
    name = "explain"
    label = "explain"
    verbose_name = "Explanations"

    def ready(self) -> None:
        from explain import receivers  # noqa: F401  (connects the registration self-test)
