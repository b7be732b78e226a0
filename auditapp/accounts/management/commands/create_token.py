from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from auditapp.accounts import roles
from auditapp.accounts.services import AccountError, create_api_token


def comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class Command(BaseCommand):
    help = "Create an API token for a user and print its key (shown once; only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--scopes",
            type=comma_list,
            default=["read"],
            help=f"Comma-separated, from: {', '.join(roles.SCOPES)} (default: read).",
        )
        parser.add_argument(
            "--models", type=comma_list, default=[], help="Limit the token to these models."
        )
        parser.add_argument("--expires-days", type=int, default=None)
        parser.add_argument("--name", default="", help="A label to recognise the token by.")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        try:
            _, key = create_api_token(
                user,
                scopes=options["scopes"],
                model_names=options["models"],
                expires_days=options["expires_days"],
                name=options["name"],
            )
        except AccountError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(key)
