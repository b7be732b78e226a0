"""Batch import of decisions from CSV or JSON Lines: valid rows are stored, bad rows reported.

Rows are checked and stored in chunks, each chunk in one transaction, so a
long import makes progress and a bad row never leaves half a decision behind.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.utils import timezone

from auditapp import textcheck
from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.decisions.services import record_checked_decisions
from auditapp.decisions.validation import check_decisions
from auditapp.errors import Conflict, InvalidInput
from auditapp.registry.models import ModelVersion

CHUNK = 1000
ENVELOPE_COLUMNS = ("request_id", "predicted_at", "prediction")
OPTIONAL_COLUMNS = ("score", "subject_ref", "metadata")


@dataclass
class ImportSummary:
    created: int = 0
    duplicates: int = 0
    rejected: list[dict] = field(default_factory=list)  # {"line", "request_id", "errors"}

    @property
    def total(self) -> int:
        return self.created + self.duplicates + len(self.rejected)


def _csv_rows(path: Path, model_version: ModelVersion) -> Iterator[tuple[int, Any]]:
    schema = model_version.parsed_schema
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        known = (*ENVELOPE_COLUMNS, *OPTIONAL_COLUMNS, *schema.names)
        required = (*ENVELOPE_COLUMNS, *schema.names)
        if problem := textcheck.csv_header_problem(header, required, known):  # before any row
            raise InvalidInput(f"{path.name} {problem}.")
        for line, row in enumerate(reader, start=2):
            if problem := textcheck.ragged_row(row, header):  # no value is where it says
                yield line, {"errors": [("", problem)], "request_id": row.get("request_id")}
                continue
            inputs, errors = schema.text_row_to_inputs(row)
            if errors:
                yield line, {"errors": errors, "request_id": row.get("request_id")}
                continue
            item = {
                "model": model_version.registered_model.name,
                "version": model_version.version,
                "request_id": row["request_id"],
                "inputs": inputs,
                "prediction": schema.target.label_from_text(row["prediction"]),
                "predicted_at": row["predicted_at"],
            }
            if row.get("score", "").strip():
                try:
                    item["score"] = float(row["score"])
                except ValueError:
                    item["score"] = row["score"]
            if row.get("subject_ref", "").strip():
                item["subject_ref"] = row["subject_ref"]
            if row.get("metadata", "").strip():
                try:
                    item["metadata"] = textcheck.loads(row["metadata"])
                except ValueError:
                    yield (
                        line,
                        {
                            "errors": [("metadata", "is not valid JSON")],
                            "request_id": row["request_id"],
                        },
                    )
                    continue
            yield line, item


def _jsonl_rows(path: Path, model_version: ModelVersion) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                item = textcheck.loads(text)
            except (ValueError, RecursionError) as exc:  # nested thousands deep: RecursionError
                yield line, {"errors": [("", f"is not valid JSON ({exc})")], "request_id": None}
                continue
            if isinstance(item, dict):
                item.setdefault("model", model_version.registered_model.name)
                item.setdefault("version", model_version.version)
            yield line, item


def count_rows(path: Path) -> int:
    with path.open("rb") as handle:
        lines = sum(1 for _ in handle)
    return max(lines - 1, 0) if path.suffix.lower() == ".csv" else lines


def import_decisions(
    actor: roles.Actor,
    path: Path,
    model_version: ModelVersion,
    *,
    progress: Callable[[int], None] = lambda n: None,
) -> ImportSummary:
    """Import a .csv or .jsonl file of decisions made by `model_version`."""
    actor.require(roles.INGEST)
    readers = {".csv": _csv_rows, ".jsonl": _jsonl_rows, ".ndjson": _jsonl_rows}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise InvalidInput(f"{path.name}: use a .csv or .jsonl file.")
    summary = ImportSummary()
    chunk: list[tuple[int, Any]] = []
    for line, item in reader(path, model_version):
        chunk.append((line, item))
        if len(chunk) == CHUNK:
            _import_chunk(actor, chunk, model_version, summary)
            progress(len(chunk))
            chunk = []
    if chunk:
        _import_chunk(actor, chunk, model_version, summary)
        progress(len(chunk))
    record_event(
        "decisions.imported",
        actor=actor,
        target=model_version,
        file=path.name,
        created=summary.created,
        duplicates=summary.duplicates,
        rejected=len(summary.rejected),
    )
    return summary


def _reject(summary: ImportSummary, line: int, request_id, errors) -> None:
    summary.rejected.append(
        {
            "line": line,
            "request_id": request_id,
            "errors": [f"{f}: {m}" if f else m for f, m in errors],
        }
    )


def _import_chunk(actor, chunk, model_version, summary: ImportSummary) -> None:
    parsed = [
        (line, item) for line, item in chunk if not (isinstance(item, dict) and "errors" in item)
    ]
    for line, item in chunk:
        if isinstance(item, dict) and "errors" in item:
            _reject(summary, line, item.get("request_id"), item["errors"])
    versions = {(model_version.registered_model.name, model_version.version): model_version}
    recorded_at = timezone.now()
    checked, invalid = check_decisions([item for _, item in parsed], versions, recorded_at)
    for problem in invalid:
        line = parsed[problem["index"]][0]
        _reject(
            summary,
            line,
            problem.get("request_id"),
            [(e["field"], e["message"]) for e in problem["errors"]],
        )
    while checked:
        try:
            results = record_checked_decisions(
                actor, checked, source="import", recorded_at=recorded_at
            )
        except Conflict as conflict:
            reused = {c["index"] for c in conflict.details}
            for decision in checked:
                if decision.index in reused:
                    _reject(
                        summary,
                        parsed[decision.index][0],
                        decision.request_id,
                        [("request_id", "was already recorded with different content")],
                    )
            checked = [d for d in checked if d.index not in reused]
            continue
        summary.created += sum(r["status"] == "created" for r in results)
        summary.duplicates += sum(r["status"] == "duplicate" for r in results)
        break
