from django.core.management.base import BaseCommand, CommandError

from auditapp.accounts import roles
from auditapp.accounts.services import AccountError, create_user


class Command(BaseCommand):
    help = (
        "Create a user with one role "
        "(admin, ml_engineer, compliance_officer, domain_expert, auditor)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=roles.ROLES)
        parser.add_argument("--password", help="Without one, the user cannot log in to the site.")
        parser.add_argument("--email", default="")

    def handle(self, *args, **options):
        try:
            user = create_user(
                options["username"],
                options["role"],
                password=options["password"],
                email=options["email"],
            )
        except AccountError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Created {user.get_username()} with role {options['role']}.")
