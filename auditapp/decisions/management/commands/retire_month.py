from django.core.management.base import BaseCommand, CommandError

from auditapp.accounts import roles
from auditapp.decisions import retention
from auditapp.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Retire an expired month: every decision predicted in it (UTC) and every row that "
        "refers to one (outcomes, reviews, explanations, notices...). A sealed declaration "
        "is written first; on PostgreSQL the month's partitions are detached (kept renamed "
        "..._retired to dump and drop; --drop drops them) and other rows deleted by id "
        "range. The log keeps their hashes: verify_chain then reports them retired."
    )

    def add_arguments(self, parser):
        parser.add_argument("month", help="YYYY-MM, before the current month")
        parser.add_argument("--drop", action="store_true", help="drop partitions, not keep them")
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would go, change nothing"
        )

    def handle(self, *args, month: str, drop: bool, dry_run: bool, **options):
        try:
            year, number = retention.parse_month(month)
            if dry_run:
                plan = retention.plan_retirement(year, number, drop=drop)
            else:
                plan = retention.retire_month(roles.system_actor(), year, number, drop=drop)
        except ServiceError as error:
            raise CommandError(str(error)) from error
        for line in plan.lines():
            self.stdout.write(line)
        if dry_run:
            self.stdout.write("Dry run: nothing was changed.")
