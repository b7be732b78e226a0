import csv
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from auditapp import textcheck
from auditapp.accounts import roles
from auditapp.decisions.outcomes import check_outcomes, store_outcomes
from auditapp.registry.models import RegisteredModel

CHUNK = 1000
SHOWN = 20
COLUMNS = ("request_id", "outcome", "observed_at")


class Command(BaseCommand):
    help = (
        "Import outcomes of one model's decisions from a CSV with the columns request_id, "
        "outcome and observed_at (ISO-8601 with a time zone). Valid rows are stored; rows "
        "naming unknown decisions or bad values are listed, not dropped silently."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--model", required=True)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options):
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        model = RegisteredModel.objects.filter(name=options["model"]).first()
        if model is None:
            raise CommandError(f"No model named {options['model']!r}.")
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        if problem := textcheck.csv_header_problem(header, COLUMNS, COLUMNS):  # before any row
            raise CommandError(f"{path.name} {problem}.")
        target = model.versions.first().parsed_schema.target
        created = duplicates = 0
        rejected: list[tuple[int, str]] = []  # (line, why), listed in line order
        actor = roles.system_actor()
        with tqdm(
            total=len(rows), unit="rows", disable=options["no_progress"], file=self.stderr._out
        ) as bar:
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                readable = []
                for line, row in enumerate(chunk, start=start + 2):
                    if ragged := textcheck.ragged_row(row, header):  # its cells are shifted
                        rejected.append((line, f"({row['request_id']}): {ragged}"))
                    else:
                        readable.append((line, row))
                items = [self._item(row, model.name, target) for _, row in readable]
                valid, invalid = check_outcomes(actor, items, timezone.now())
                for problem in invalid:
                    line = readable[problem["index"]][0]
                    reasons = "; ".join(f"{e['field']}: {e['message']}" for e in problem["errors"])
                    rejected.append((line, f"({problem['request_id']}): {reasons}"))
                if valid:
                    results = store_outcomes(actor, valid, source="import")
                    created += sum(r["status"] == "created" for r in results)
                    duplicates += sum(r["status"] == "duplicate" for r in results)
                bar.update(len(chunk))
        self.stdout.write(
            f"{len(rows)} rows: {created} imported, {duplicates} already recorded, "
            f"{len(rejected)} rejected."
        )
        for line, why in sorted(rejected)[:SHOWN]:
            self.stdout.write(f"  line {line} {why}")
        if len(rejected) > SHOWN:
            self.stdout.write(f"  … and {len(rejected) - SHOWN} more.")
        if rejected:
            raise CommandError(f"{len(rejected)} row(s) were rejected; the others were imported.")

    @staticmethod
    def _item(row: dict, model: str, target) -> dict:
        return {
            "model": model,
            "request_id": row.get("request_id", ""),
            "outcome": target.label_from_text(row.get("outcome") or ""),
            "observed_at": row.get("observed_at", ""),
        }
