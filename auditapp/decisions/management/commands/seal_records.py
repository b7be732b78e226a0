from django.core.management.base import BaseCommand

from auditapp.decisions import tallies
from auditapp.decisions.sealing import seal_new_records


class Command(BaseCommand):
    help = (
        "Seal the decisions, audit events and records written since the last seal into the "
        "log now, signing the new tree head (a Celery beat task does this every minute)."
    )

    def handle(self, *args, **options):
        seals = seal_new_records()
        tallies.count_sealed()  # as the beat task does: the version pages' tallies
        for seal in seals:
            self.stdout.write(
                f"seal {seal.index}: {seal.decision_count} decisions, {seal.event_count} "
                f"audit events, {seal.record_count} other records, tree size {seal.tree_size}, "
                f"root {seal.root_hash}"
            )
        if not seals:
            self.stdout.write("Nothing new to seal.")
