import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from auditapp.accounts import records, roles
from auditapp.decisions.sealing import exported_seal, latest_seal
from auditapp.decisions.verification import read_exported_seal, verify_as
from auditapp.errors import InvalidInput, ServiceError


class Command(BaseCommand):
    help = (
        "Recompute every decision's and audit event's content hash from its stored fields, "
        "rebuild the log's Merkle tree and check every seal's root and signature. Exits 0 "
        "when all match; otherwise exits 1 and names the first record or seal that does not "
        "match. --against checks the log against a seal exported earlier and kept elsewhere; "
        "--export-seal writes the latest seal for you to keep. Decisions are hashed by one "
        "process per core (PostgreSQL)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--against", type=Path, help="a seal exported earlier (JSON)")
        parser.add_argument("--export-seal", type=Path, help="write the latest seal here")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options):
        against = self._read_seal(options["against"]) if options["against"] else None
        bars: dict[str, tqdm] = {}

        def progress(kind: str, done: int) -> None:
            bar = bars.get(kind) or bars.setdefault(
                kind,
                tqdm(
                    unit=f" {kind}s",
                    desc=f"{kind}s",
                    disable=options["no_progress"],
                    file=self.stderr._out,
                ),
            )
            bar.update(done - bar.n)

        try:
            result = verify_as(
                roles.system_actor(),
                against=against,
                via="command",
                progress=progress,
                processes=True,
            )
        except ServiceError as error:
            raise CommandError(str(error)) from error
        finally:
            for bar in bars.values():
                bar.close()
        others = records.describe_counts(result.records)
        self.stdout.write(
            f"{result.decisions} decisions, {result.events} audit events, {result.seals} seals "
            f"checked ({result.unsealed_decisions} decisions, {result.unsealed_events} events and "
            f"{result.unsealed_records} other records not sealed yet); in the log beside them: "
            f"{others or 'nothing else'}."
        )
        for retired in result.retired:
            self.stdout.write(f"Retired: {retired['summary']}.")
        if against is not None and result.ok:
            kept = result.checked_against
            what = (
                f"of tree size {kept['tree_size']}"
                if "tree_size" in kept
                else f"{kept['index']} of the former hash chain"
            )
            self.stdout.write(f"The log matches the kept seal {what}.")
        if options["export_seal"]:
            seal = latest_seal()
            if seal is None:
                raise CommandError("There is no seal to export yet (run seal_records).")
            options["export_seal"].write_text(json.dumps(exported_seal(seal), indent=2) + "\n")
            self.stdout.write(
                f"Latest seal (tree size {seal.tree_size}) written to {options['export_seal']}."
            )
        if not result.ok:
            bad = result.first_bad
            what = f"seal {bad['index']}" if bad["kind"] == "seal" else f"{bad['kind']} {bad['id']}"
            self.stderr.write(f"MISMATCH: {what}: {bad['reason']}.")
            raise SystemExit(1)
        self.stdout.write("OK: every record and seal matches.")

    def _read_seal(self, path: Path) -> dict:
        try:
            return read_exported_seal(path.read_bytes())
        except FileNotFoundError as error:
            raise CommandError(f"No such file: {path}") from error
        except InvalidInput as error:
            raise CommandError(f"{path}: {error.message}") from error
