from django.core.management.base import BaseCommand, CommandError

from auditapp.accounts import roles
from auditapp.decisions import feature_indexes
from auditapp.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Index one model's input feature so that searches by a value few decisions have "
        "stay fast (PostgreSQL; each index costs that model's inserts a little). "
        "Without arguments: list the feature indexes."
    )

    def add_arguments(self, parser):
        parser.add_argument("model", nargs="?", help="the registered model's name")
        parser.add_argument("feature", nargs="?", help="one of its input features")
        parser.add_argument("--drop", action="store_true", help="drop the index instead")

    def handle(self, *args, model=None, feature=None, drop=False, **options):
        try:
            if model is None:
                self._list()
            elif feature is None:
                raise CommandError("Name the feature too: index_feature MODEL FEATURE.")
            elif drop:
                dropped = feature_indexes.drop_feature_index(roles.system_actor(), model, feature)
                self.stdout.write(
                    f"Dropped the index on {model}.{feature}."
                    if dropped
                    else f"There was no index on {model}.{feature}."
                )
            else:
                self.stdout.write(f"Building the index on {model}.{feature} (writers go on)...")
                index = feature_indexes.create_feature_index(roles.system_actor(), model, feature)
                self.stdout.write(f"{index.name}: {index.size_bytes / 1e6:.1f} MB, ready.")
        except ServiceError as exc:
            raise CommandError(exc.message) from None

    def _list(self):
        indexes = feature_indexes.feature_indexes()
        for index in indexes:
            state = "ready" if index.valid else "INVALID (interrupted; build it again)"
            self.stdout.write(
                f"{index.model}.{index.feature}  {index.name}  "
                f"{index.size_bytes / 1e6:.1f} MB  {state}"
            )
        if not indexes:
            self.stdout.write("No feature indexes.")
