from django.core.management.base import BaseCommand, CommandError

from auditapp.decisions import rotation
from auditapp.encryption import UnreadableInputs, keyring


class Command(BaseCommand):
    help = (
        "Re-encrypt decisions' sensitive inputs under the current data key (the first of "
        "ATTEST_DATA_KEYS), and encrypt those still in clear, in batches, each committed: "
        "rerun after an interruption and it continues where it stopped. Content hashes and "
        "seals do not change. Audited at the start and the end."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=rotation.DEFAULT_BATCH)
        parser.add_argument(
            "--max-batches", type=int, default=None, help="stop after this many batches"
        )

    def handle(self, *args, batch: int, max_batches: int | None, **options):
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        self.stdout.write(f"Current data key: {keyring().current}")

        def report(progress: rotation.Progress) -> None:
            self.stdout.write(progress.line())
            self.stdout.flush()

        try:
            progress = rotation.rotate_data_keys(
                batch=batch, max_batches=max_batches, report=report
            )
        except UnreadableInputs as error:
            raise CommandError(error.message) from error
        left = progress.total - progress.done
        if left:
            self.stdout.write(f"Stopped with {left} left: run the command again to continue.")
        else:
            self.stdout.write(f"Done: {progress.done} re-encrypted, none left.")
