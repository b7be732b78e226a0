from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from auditapp import partitions


class Command(BaseCommand):
    help = (
        "Create the monthly partitions of decisions, audit events and explanation results "
        "for this month and the next ones (PostgreSQL; Celery beat does it every few hours), "
        "then list them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--months", type=int, default=partitions.AHEAD, help="months beyond this one"
        )

    def handle(self, *args, months: int, **options):
        if connection.vendor != "postgresql":
            raise CommandError("Partitions are PostgreSQL's; the embedded SQLite default has none.")
        for table in partitions.partitioned_tables():
            created = set(partitions.create_ahead(table, months))
            partitions.analyze(table)
            for partition in partitions.partitions(table):
                note = "  (created)" if partition.name in created else ""
                lower = "MINVALUE" if partition.lower is None else partition.lower
                rows = partition.rows_estimate
                size = "rows not counted yet" if rows is None else f"~{rows} rows"
                self.stdout.write(
                    f"{partition.name}  ids {lower} to {partition.upper}  {size}{note}"
                )
