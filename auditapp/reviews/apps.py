from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "auditapp.reviews"
    label = "reviews"
    verbose_name = "Human oversight"
