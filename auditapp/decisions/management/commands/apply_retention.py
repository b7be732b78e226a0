from django.core.management.base import BaseCommand, CommandError

from auditapp.accounts import roles
from auditapp.decisions import input_retention
from auditapp.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Erase the personal inputs of decisions past their model's retention period "
        "(PUT /api/v1/models/NAME/retention), keeping each decision, its commitments and "
        "its proof; legal holds spare what they cover. One sealed erasure declaration per "
        "model. Not retire_month, which deletes whole expired months."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="say what would go")
        parser.add_argument("--model", help="only this model")

    def handle(self, *args, dry_run: bool, model: str | None, **options):
        try:
            runs = input_retention.apply_retention(
                roles.system_actor(), dry_run=dry_run, model_name=model, via="command"
            )
        except ServiceError as error:
            raise CommandError(str(error)) from error
        if not runs:
            self.stdout.write("No model has a retention period.")
        for run in runs:
            for line in run.lines():
                self.stdout.write(line)
        if dry_run:
            self.stdout.write("Dry run: nothing was changed.")
