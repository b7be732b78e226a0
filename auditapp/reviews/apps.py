from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "auditapp.reviews"
    label = "reviews"
    verbose_name = "Human oversight"

    def ready(self) -> None:
        from auditapp.reviews import records  # noqa: F401  (registers feedback, review cases, case events, overrides in the log)
