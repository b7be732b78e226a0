from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from auditapp.accounts.roles import system_actor
from auditapp.accounts.two_factor import reset_devices


class Command(BaseCommand):
    help = (
        "Remove a user's two-factor (TOTP) devices, e.g. a lost phone: they enrol a new one "
        "at their next sign-in. Recorded in the audit log."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        removed = reset_devices(user, actor=system_actor())
        self.stdout.write(
            f"Removed {removed} two-factor device(s) of {user.get_username()}; "
            "they enrol again at their next sign-in."
        )
