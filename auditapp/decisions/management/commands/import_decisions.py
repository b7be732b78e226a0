import csv
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from auditapp.accounts import roles
from auditapp.csvcells import safe_row
from auditapp.decisions.importing import count_rows, import_decisions
from auditapp.errors import NotFound, ServiceError
from auditapp.registry.lookups import get_version_for_actor

SHOWN_REJECTS = 20


class Command(BaseCommand):
    help = (
        "Import decisions made by one model version from a CSV (request_id, predicted_at, "
        "prediction, score, subject_ref, metadata and one column per feature) or a JSON Lines "
        "file (one decision object per line). Valid rows are stored, rejected rows listed."
    )

    def add_base_argument(self, parser, *args, **kwargs):
        # API.md names --version as the model version; Django's own --version
        # (print Django's version) gives way.
        if "--version" not in args:
            super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--model", required=True)
        parser.add_argument("--version", required=True, dest="model_version")
        parser.add_argument("--rejects", type=Path, help="Write every rejected row here (CSV).")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options):
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        actor = roles.system_actor()
        try:
            model_version = get_version_for_actor(actor, options["model"], options["model_version"])
        except NotFound as exc:
            raise CommandError(exc.message) from None
        with tqdm(
            total=count_rows(path),
            unit="rows",
            desc=f"Importing {path.name}",
            disable=options["no_progress"],
            file=self.stderr._out,
        ) as bar:
            try:
                summary = import_decisions(actor, path, model_version, progress=bar.update)
            except ServiceError as exc:
                raise CommandError(exc.message) from None
        self.stdout.write(
            f"{summary.total} rows: {summary.created} imported, {summary.duplicates} already "
            f"recorded, {len(summary.rejected)} rejected."
        )
        for reject in summary.rejected[:SHOWN_REJECTS]:
            self.stdout.write(
                f"  line {reject['line']} ({reject['request_id']}): {'; '.join(reject['errors'])}"
            )
        if len(summary.rejected) > SHOWN_REJECTS:
            self.stdout.write(f"  … and {len(summary.rejected) - SHOWN_REJECTS} more.")
        if options["rejects"] and summary.rejected:
            self._write_rejects(options["rejects"], summary.rejected)
        if summary.rejected:
            raise CommandError(
                f"{len(summary.rejected)} row(s) were rejected; the others were imported."
            )

    def _write_rejects(self, path: Path, rejected: list[dict]) -> None:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", "request_id", "errors"])
            for reject in rejected:
                row = [reject["line"], reject["request_id"], "; ".join(reject["errors"])]
                writer.writerow(safe_row(row))  # request ids come from the file: no formulas
        self.stdout.write(f"Rejected rows written to {path}.")
