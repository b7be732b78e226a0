"""manage.py import_decisions: CSV and JSON Lines, valid rows stored, bad rows reported."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.core.management import CommandError, call_command

from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from explain.models import Explanation
from tests.factories import DecisionPayloadFactory


def write_csv(path, payloads) -> None:
    features = list(payloads[0]["inputs"])
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle,
            fieldnames=[
                "request_id",
                "predicted_at",
                "prediction",
                "score",
                "subject_ref",
                "metadata",
                *features,
            ],
        )
        writer.writeheader()
        for p in payloads:
            writer.writerow(
                {
                    "request_id": p["request_id"],
                    "predicted_at": p["predicted_at"],
                    "prediction": p["prediction"],
                    "score": p["score"],
                    "subject_ref": p["subject_ref"],
                    "metadata": json.dumps(p["metadata"]),
                    **p["inputs"],
                }
            )


def run_import(path, *extra) -> tuple[str, CommandError | None]:
    out = io.StringIO()
    try:
        call_command(
            "import_decisions",
            str(path),
            "--model",
            "credit",
            "--version",
            "1",
            "--no-progress",
            *extra,
            stdout=out,
        )
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def test_a_csv_import_stores_valid_rows_and_reports_each_rejected_row(model_version, tmp_path):
    payloads = DecisionPayloadFactory.build_batch(6)
    payloads[1]["inputs"]["age"] = "forty"
    payloads[4]["inputs"]["loan_purpose"] = "yacht"
    path = tmp_path / "decisions.csv"
    write_csv(path, payloads)

    output, error = run_import(path, "--rejects", str(tmp_path / "rejects.csv"))

    assert error is not None and "2 row(s) were rejected" in str(error)
    assert "6 rows: 4 imported, 0 already recorded, 2 rejected." in output
    assert "line 3 (" in output and "inputs.age" in output
    assert "line 6 (" in output and "'yacht' is not a known category" in output
    stored = Decision.objects.order_by("request_id")
    expected = [p for i, p in enumerate(payloads) if i not in (1, 4)]
    assert [d.request_id for d in stored] == sorted(p["request_id"] for p in expected)
    first = Decision.objects.get(request_id=expected[0]["request_id"])
    assert first.full_inputs() == expected[0]["inputs"]
    assert first.source == "import"
    assert first.score == expected[0]["score"]
    assert first.content_hash == first.compute_content_hash()
    assert Explanation.objects.filter(decision__in=stored).count() == 8  # shap + lime each
    rejects = list(csv.DictReader((tmp_path / "rejects.csv").open()))
    assert [r["line"] for r in rejects] == ["3", "6"]
    event = AuditEvent.objects.get(action="decisions.imported")
    assert (event.details["created"], event.details["rejected"]) == (4, 2)
    assert event.actor_name == "system (manage.py)"


def test_importing_the_same_file_again_stores_nothing_new(model_version, tmp_path):
    payloads = DecisionPayloadFactory.build_batch(3)
    path = tmp_path / "decisions.csv"
    write_csv(path, payloads)
    run_import(path)

    output, error = run_import(path)

    assert error is None
    assert "3 rows: 0 imported, 3 already recorded, 0 rejected." in output
    assert Decision.objects.count() == 3


def test_a_jsonl_import_takes_model_and_version_from_the_command_line(model_version, tmp_path):
    payloads = DecisionPayloadFactory.build_batch(3)
    path = tmp_path / "decisions.jsonl"
    lines = [
        json.dumps({k: v for k, v in p.items() if k not in ("model", "version")}) for p in payloads
    ]
    path.write_text("\n".join([*lines, "{not json"]) + "\n")

    output, error = run_import(path)

    assert error is not None
    assert "4 rows: 3 imported, 0 already recorded, 1 rejected." in output
    assert "line 4" in output and "is not valid JSON" in output
    assert Decision.objects.count() == 3


def test_a_reused_request_id_with_other_content_is_rejected_not_overwritten(
    model_version, ingest, tmp_path
):
    original = DecisionPayloadFactory()
    ingest(original)
    changed = dict(original, score=0.99, prediction="bad")
    path = tmp_path / "decisions.csv"
    write_csv(path, [changed, DecisionPayloadFactory()])

    output, error = run_import(path)

    assert error is not None
    assert "was already recorded with different content" in output
    assert Decision.objects.get(request_id=original["request_id"]).score == original["score"]
    assert Decision.objects.count() == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope", "--version", "1"], "No version '1' of a model named 'nope'"),
        (["--model", "credit", "--version", "9"], "No version '9'"),
    ],
)
def test_an_unknown_model_or_version_is_a_clear_error(model_version, tmp_path, args, message):
    path = tmp_path / "decisions.csv"
    write_csv(path, DecisionPayloadFactory.build_batch(1))
    with pytest.raises(CommandError, match=message):
        call_command("import_decisions", str(path), *args, "--no-progress")


def test_a_csv_without_the_schema_columns_is_refused_whole(model_version, tmp_path):
    path = tmp_path / "decisions.csv"
    path.write_text("request_id,predicted_at,prediction,age\nr1,2026-01-01T00:00:00Z,good,40\n")
    with pytest.raises(CommandError, match="lacks the column"):
        call_command(
            "import_decisions", str(path), "--model", "credit", "--version", "1", "--no-progress"
        )
    assert Decision.objects.count() == 0


@pytest.mark.parametrize(
    ("header_change", "named"),
    [
        # csv.DictReader keeps the last of two same-named columns: the first was dropped
        (lambda header: [*header, "income"], "repeats the column(s) ['income']"),
        # a misspelt optional column: its values were dropped without a word
        (lambda header: [("metdata" if c == "metadata" else c) for c in header], "'metdata'"),
    ],
    ids=["repeated_column", "unknown_column"],
)
def test_a_csv_whose_header_is_ambiguous_or_unknown_is_refused_whole(
    model_version, tmp_path, header_change, named
):
    source = tmp_path / "good.csv"
    write_csv(source, DecisionPayloadFactory.build_batch(2))
    header, *rows = source.read_text().splitlines()
    columns = header_change(header.split(","))
    path = tmp_path / "decisions.csv"
    extra = len(columns) - len(header.split(","))
    path.write_text("\n".join([",".join(columns), *(row + ",1" * extra for row in rows)]) + "\n")

    with pytest.raises(CommandError) as refused:
        call_command(
            "import_decisions", str(path), "--model", "credit", "--version", "1", "--no-progress"
        )

    assert named in str(refused.value)
    assert Decision.objects.count() == 0


def test_a_row_with_more_or_fewer_cells_than_the_header_is_rejected_not_shifted(
    model_version, tmp_path
):
    """An unquoted comma in a value (a subject "c-1,2") shifts every later cell one
    column on: csv had dropped the surplus cell and stored the row with its values in the
    wrong columns."""
    source = tmp_path / "good.csv"
    write_csv(source, DecisionPayloadFactory.build_batch(3))
    header, first, second, third = source.read_text().splitlines()
    subject = header.split(",").index("subject_ref")
    cells = second.split(",")
    cells[subject] = cells[subject] + ",2"  # written unquoted
    short = ",".join(third.split(",")[:-1])
    path = tmp_path / "decisions.csv"
    path.write_text("\n".join([header, first, ",".join(cells), short]) + "\n")

    out = io.StringIO()
    with pytest.raises(CommandError, match="2 row"):
        call_command(
            "import_decisions", str(path), "--model", "credit", "--version", "1",
            "--no-progress", stdout=out,
        )  # fmt: skip

    report = out.getvalue()
    assert re.search(r"line 3 \(\S+\): has 17 cells where the header has 16", report), report
    assert re.search(r"line 4 \(\S+\): has 15 cells where the header has 16", report)
    assert Decision.objects.count() == 1
