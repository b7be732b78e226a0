from django.apps import AppConfig


class ExplainConfig(AppConfig):
    name = "explain"
    label = "explain"
    verbose_name = "Explanations"

    def ready(self) -> None:
        from explain import (  # noqa: F401
            receivers,  # connects the registration self-test
            results,  # registers explanation results as records of the log
        )
