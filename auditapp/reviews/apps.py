from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "auditapp.reviews"
    label = "reviews"
    verbose_name = "Human oversight"

    def ready(self) -> None:
        # Registers feedback, review cases, case events and overrides in the log.
        from auditapp.decisions.signals import explanations_stored
        from auditapp.reviews import records  # noqa: F401
        from auditapp.reviews.services import on_explanations_stored

        # Stored explanations go to the queue's rules, in the workers' transaction.
        explanations_stored.connect(on_explanations_stored, dispatch_uid="review-explanations")
