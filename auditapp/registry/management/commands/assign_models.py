from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from auditapp.errors import InvalidInput
from auditapp.registry.services import assign_models


class Command(BaseCommand):
    help = "Give a domain expert or ML engineer access to the named models."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("models", nargs="+", metavar="MODEL")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        try:
            models = assign_models(user, options["models"])
        except InvalidInput as exc:
            raise CommandError(exc.message) from None
        names = ", ".join(sorted(m.name for m in models))
        self.stdout.write(f"{user.get_username()} can now see: {names}.")
