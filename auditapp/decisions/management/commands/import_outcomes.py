import csv
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from auditapp.accounts import roles
from auditapp.decisions.outcomes import check_outcomes, store_outcomes
from auditapp.registry.models import RegisteredModel

CHUNK = 1000
SHOWN = 20


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
            rows = list(csv.DictReader(handle))
        missing = {"request_id", "outcome", "observed_at"} - set(rows[0] if rows else {})
        if missing:
            raise CommandError(f"{path.name} lacks the column(s) {sorted(missing)}.")
        target = model.versions.first().parsed_schema.target
        created = duplicates = 0
        rejected: list[str] = []
        actor = roles.system_actor()
        with tqdm(
            total=len(rows), unit="rows", disable=options["no_progress"], file=self.stderr._out
        ) as bar:
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                items = [self._item(row, model.name, target) for row in chunk]
                valid, invalid = check_outcomes(actor, items, timezone.now())
                for problem in invalid:
                    line = start + problem["index"] + 2
                    reasons = "; ".join(f"{e['field']}: {e['message']}" for e in problem["errors"])
                    rejected.append(f"line {line} ({problem['request_id']}): {reasons}")
                if valid:
                    results = store_outcomes(actor, valid, source="import")
                    created += sum(r["status"] == "created" for r in results)
                    duplicates += sum(r["status"] == "duplicate" for r in results)
                bar.update(len(chunk))
        self.stdout.write(
            f"{len(rows)} rows: {created} imported, {duplicates} already recorded, "
            f"{len(rejected)} rejected."
        )
        for line in rejected[:SHOWN]:
            self.stdout.write(f"  {line}")
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
