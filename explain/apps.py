from django.apps import AppConfig


class ExplainConfig(AppConfig):
    name = "explain"
    label = "explain"
    verbose_name = "Explanations"

    def ready(self) -> None:
        from auditapp.decisions import explanation_hooks
        from explain import (  # noqa: F401
            copies,  # registers counterfactual results as copies of inputs (erasure)
            receivers,  # connects the registration self-test
            records,
            results,  # registers explanation results as records of the log
        )

        explanation_hooks.register(  # what monitoring needs of explain, without importing it
            background_frame="explain.background.background_frame",
            background_figures="explain.background.background_figures",
        )
