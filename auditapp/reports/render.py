"""Three renderers over one data document: PDF (WeasyPrint), CSV and JSON.

Which hash is which:
- `content_sha256` is the sha256 of the canonical JSON (auditapp/decisions/hashing.py:
  sorted keys, no spaces, UTF-8) of the data document alone. It is printed on
  the PDF's cover and carried by the CSV and JSON files, so anyone can recompute
  it from the JSON export: sha256(orjson.dumps(export["data"], option=OPT_SORT_KEYS)).
- `Report.sha256` is the sha256 of the stored file's bytes, recorded when it is
  stored and shown on the reports page and in the API. A file cannot contain its
  own hash, so the PDF carries only the content hash.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson
from django.template.loader import render_to_string

from auditapp import charts
from auditapp.csvcells import safe_cell
from auditapp.hashing import sha256_hex

# List items keyed by the first of these fields that is unique in the list (else by index).
KEY_FIELDS = ("day", "prediction", "feature", "age", "decision_id", "rank")
CSV_COLUMNS = ("section", "figure", "value")


def content_sha256(document: dict[str, Any]) -> str:
    return sha256_hex(document)


def figure(value: Any) -> str:
    """How a number is printed in the PDF (tests read the PDF back with the same rule)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0 or 0.001 <= abs(value) < 1000:
            return f"{value:.4f}"
        if abs(value) >= 1000:
            return f"{value:.1f}"
        return f"{value:.2e}"
    return str(value)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


# --- JSON ---------------------------------------------------------------------------


def render_json(envelope: dict[str, Any]) -> bytes:
    """Indented, in document order (sections 1-10); the content hash sorts keys itself."""
    return orjson.dumps(envelope, option=orjson.OPT_INDENT_2) + b"\n"


# --- CSV ----------------------------------------------------------------------------


def flatten(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every scalar of a document with its path; lists of records keyed by a natural key."""
    if isinstance(value, dict):
        if not value:
            yield path, None
        for key, item in value.items():
            yield from flatten(item, (*path, str(key)))
    elif isinstance(value, list):
        if not value:
            yield path, None
        key_field = _key_field(value)
        for index, item in enumerate(value):
            if key_field is None:
                yield from flatten(item, (*path, str(index)))
            else:
                rest = {k: v for k, v in item.items() if k != key_field}
                yield from flatten(rest, (*path, str(item[key_field])))
    else:
        yield path, value


def _key_field(items: list) -> str | None:
    if not all(isinstance(item, dict) for item in items):
        return None
    for name in KEY_FIELDS:
        keys = [item.get(name) for item in items]
        if all(k is not None for k in keys) and len(set(map(str, keys))) == len(keys):
            return name
    return None


def csv_rows(envelope: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(section, figure, value): the envelope's fields under "report", then the document."""
    for key, value in envelope.items():
        if key != "data":
            yield "report", key, value
    for path, value in flatten(envelope["data"]):
        if path[0] == "sections":
            yield path[1], ".".join(path[2:]), value
        else:
            yield path[0], ".".join(path[1:]), value


def csv_value(value: Any) -> str:
    """A value as CSV text that reads back exactly: JSON for numbers and booleans."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def csv_cell(value: Any) -> str:
    """The value column's cell: csv_value, text through safe_cell (no spreadsheet formulas).

    Model-card text or a class name may start like a formula; numbers stay numbers.
    """
    return safe_cell(value) if isinstance(value, str) else csv_value(value)


def render_csv(envelope: dict[str, Any]) -> bytes:
    buffer = io.StringIO()
    # CRLF (RFC 4180): a text with a carriage return is then quoted, not cut in two.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for section, name, value in csv_rows(envelope):
        writer.writerow([safe_cell(section), safe_cell(name), csv_cell(value)])
    return buffer.getvalue().encode()


# --- PDF ----------------------------------------------------------------------------


def render_pdf(template: str, context: dict[str, Any], *, title: str) -> bytes:
    """HTML from a Django template to PDF. No creation date: same input, same bytes."""
    import weasyprint

    html = render_to_string(template, {**context, "pdf_title": title})
    return weasyprint.HTML(string=html).write_pdf()


def compliance_charts(document: dict[str, Any]) -> dict[str, charts.Chart]:
    """The web UI's SVG charts for the report's figures."""
    sections = document["sections"]
    volumes, explanations = sections["volumes"], sections["explanations"]
    histogram = volumes["score"]["histogram"]
    return {
        "per_day": charts.time_series(
            [(row["day"], row["decisions"]) for row in volumes["per_day"]],
            title="Decisions per day (UTC)",
            y_label="decisions",
        ),
        "mix": charts.bar_chart(
            [(row["prediction"], row["decisions"]) for row in volumes["prediction_mix"]],
            title="Prediction mix",
            value_label="decisions",
            signed=False,
        ),
        "scores": charts.histogram(
            [row["decisions"] for row in histogram],
            [row["from"] for row in histogram] + [histogram[-1]["to"]],
            title="Score distribution",
            x_label="score",
        ),
        "importance": charts.bar_chart(
            [(row["label"], row["mean_abs_shap"]) for row in explanations["global_importance"]],
            title="Global importance (mean |SHAP| per feature)",
            value_label="mean |SHAP|",
            signed=False,
        ),
    }
