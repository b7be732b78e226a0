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

from auditapp import charts, formatting
from auditapp.csvcells import safe_cell
from auditapp.hashing import sha256_hex
from auditapp.monitoring import thresholds

# List items keyed by the first of these fields that is unique in the list (else by index):
# a window's row by its start (`drift,windows.2026-11-21T00:00:00.000000+00:00.inputs...`).
KEY_FIELDS = (
    "day",
    "prediction",
    "feature",
    "age",
    "decision_id",
    "rank",
    "window_start",
    "alert_id",
)
CSV_COLUMNS = ("section", "figure", "value")
# Features whose PSI stays below half the threshold of a shift in every window ("stable"
# in PSI's usual reading) get no chart of their own.
STEADY_SHARE_OF_SHIFT = 0.5


def content_sha256(document: dict[str, Any]) -> str:
    return sha256_hex(document)


def figure(value: Any) -> str:
    """How a figure is printed in the PDF (tests read the PDF back with the same rule)."""
    return formatting.number(value)


def percent(value: float | None) -> str:
    return formatting.percent(value)


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


def compliance_charts(document: dict[str, Any]) -> dict[str, Any]:
    """The web UI's SVG charts for the report's figures; the figures per window as small
    multiples (one chart per feature, each on its own scale), as the monitoring page does."""
    sections = document["sections"]
    volumes, explanations = sections["volumes"], sections["explanations"]
    histogram = volumes["score"]["histogram"]
    return {
        **window_charts(sections),
        "per_day": charts.time_series(
            [(formatting.day(row["day"]), row["decisions"]) for row in volumes["per_day"]],
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


QUIET_RUN = 2  # quiet windows in a row: fewer are listed one by one


def quiet_runs(windows: list[dict], *counts: str) -> list[dict]:
    """A PDF table's rows: each run of QUIET_RUN or more whole windows in a row in which
    every one of `counts` is 0 (no decision; no case opened, resolved or open) becomes one
    row, {"quiet": how many, "label": the span they cover}. A report over years would
    otherwise fill pages with weeks of zeros; the JSON and CSV keep every window."""
    rows: list[dict] = []
    run: list[dict] = []

    def close_run() -> None:
        if len(run) >= QUIET_RUN:
            span = formatting.span(run[0]["window_start"], run[-1]["window_end"])
            rows.append({"quiet": len(run), "label": span})
        else:
            rows.extend(run)
        run.clear()

    for window in windows:
        if not window["partial"] and all(window[count] == 0 for count in counts):
            run.append(window)
        else:
            close_run()
            rows.append(window)
    close_run()
    return rows


def _series(windows: list[dict], pick) -> list[tuple[str, float | None]]:
    """(axis label, value) per window; None (drawn "n/a") where the window is not judged."""
    return [
        (
            formatting.short_span(row["window_start"], row["window_end"]),
            pick(row) if row.get("judged", True) else None,
        )
        for row in windows
    ]


def _judged(rows: list[dict]) -> list[dict]:
    """The windows, if any of them was judged: small multiples of "n/a" say nothing."""
    return rows if any(row.get("judged") for row in rows) else []


def window_charts(sections: dict[str, Any]) -> dict[str, Any]:
    drift, fairness, volumes = sections["drift"], sections["fairness"], sections["volumes"]
    oversight = sections["oversight"]
    unit = "day" if volumes.get("window") == "day" else "week"
    drift_rows = _judged(drift.get("windows") or [])
    performance_rows = _judged(volumes.get("windows") or [])
    fairness_rows = _judged(fairness.get("windows") or [])
    regression = any("mae" in (row["performance"] or {}) for row in performance_rows)
    labels = {f["feature"]: f["label"] for f in sections["model_identity"]["features"]}

    def psi_of(name: str):
        return lambda row: ((row["inputs"] or {}).get(name) or {}).get("psi")

    def highest(name: str) -> float:
        return max((v for _, v in _series(drift_rows, psi_of(name)) if v is not None), default=0)

    # Each chart scales to its own values: a feature that never moved would show its noise
    # (a PSI of 0.00001) as a mountain. Those are named instead; the table has their figures.
    names = sorted(drift.get("inputs") or {}, key=lambda name: -highest(name))
    steady = thresholds.PSI_SHIFT * STEADY_SHARE_OF_SHIFT
    drawn = [name for name in names if highest(name) >= steady]
    return {
        "drift_floor": f"{steady:g}",
        "drift_steady": [labels.get(n, n) for n in names if n not in drawn] if drift_rows else [],
        "drift_windows": [
            charts.time_series(
                _series(drift_rows, psi_of(name)),
                title=f"{labels.get(name, name)}: PSI per {unit}",
                y_label="PSI",
            )
            for name in drawn
        ]
        + (
            [
                charts.time_series(
                    _series(drift_rows, lambda row: (row["score"] or {}).get("psi")),
                    title=f"Scores: PSI per {unit}",
                    y_label="PSI",
                )
            ]
            if drift_rows
            else []
        ),
        "fairness_windows": [
            charts.time_series(
                _series(
                    fairness_rows,
                    lambda row, n=name: ((row["by_feature"] or {}).get(n) or {}).get(
                        "disparate_impact_ratio"
                    ),
                ),
                title=f"{labels.get(name, name)}: disparate impact ratio per {unit}",
                y_label="ratio",
            )
            for name in fairness["protected_features"]
            if fairness_rows
        ],
        "performance_windows": [
            charts.time_series(
                _series(performance_rows, lambda row, n=name: (row["performance"] or {}).get(n)),
                title=f"{formatting.figure_label(name)} per {unit}",
                y_label=formatting.figure_label(name),
            )
            for name in (("mae", "rmse") if regression else ("roc_auc", "accuracy"))
            if performance_rows
        ],
        "queue_windows": [
            charts.time_series(
                [
                    (formatting.short_span(row["window_start"], row["window_end"]), row[key])
                    for row in oversight.get("windows") or []
                ],
                title=f"Review cases {words} per {unit}",
                y_label="cases",
            )
            for key, words in (("opened", "opened"), ("open_at_end", "open at the end"))
            if any(row["opened"] or row["open_at_end"] for row in oversight.get("windows") or [])
        ],
    }
