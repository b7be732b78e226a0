"""Charts rendered on the server as self-contained, accessible SVG.

The same markup serves web pages and PDF reports (WeasyPrint), so it uses presentation
attributes only: no CSS classes, scripts or web fonts. Every chart carries a <title>, a
<desc> that states the numbers in words, and its data as a table, because a reviewer must
be able to read the figures without the picture. Output is deterministic (same input,
byte-identical markup) so that reports can be hashed and compared.

Values that are not finite numbers (NaN, infinity, None) never reach the markup: they are
left out of the drawing and named in the description and in the table's notes.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import math
import re
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

WIDTH = 720  # viewBox units; the SVG scales to its container (width="100%")
PAD = 16
FONT = 12
SMALL = 11
TITLE_FONT = 14
ROW = 24
BAR = 14
STRIP_ROW = 30
PLOT_HEIGHT = 220
CHAR_EM = 0.6  # generous average glyph width in ems: labels are sized before any font exists
LABEL_SHARE = 0.32  # the widest the label column may get, as a share of the width
MAX_PERIOD_LABELS = 14
GOLDEN = 0.6180339887498949  # its multiples mod 1 spread evenly: jitter without randomness

INK = "#1d2433"
MUTED = "#5b6475"
GRID = "#e4e7ec"
AXIS = "#8a94a6"
POSITIVE = "#c2410c"  # pushes towards the positive (adverse) class
NEGATIVE = "#1d4ed8"  # pushes away from it
NEUTRAL = "#4f6d8f"  # magnitudes and counts, which have no direction
UNATTRIBUTED = "#9aa3b2"
FONT_FAMILY = "system-ui, sans-serif"
DEFAULT_LEGEND = ("Raises the prediction", "Lowers the prediction")
MINUS = "\u2212"

# Characters XML 1.0 forbids even when escaped; user labels may contain them.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Chart:
    """An SVG chart plus the same numbers as a table, for screen readers and auditors."""

    svg: str
    title: str
    columns: list[str]
    rows: list[list]
    notes: list[str] = field(default_factory=list)

    def table_html(self) -> str:
        """The data as an escaped HTML table; notes (e.g. missing values) go in its footer."""
        head = "".join(f'<th scope="col">{_esc(column)}</th>' for column in self.columns)
        span = max(1, len(self.columns))
        body = "".join(_table_row(row) for row in self.rows)
        body = body or f'<tr><td colspan="{span}">No data</td></tr>'
        foot = "".join(f'<tr><td colspan="{span}">{_esc(note)}</td></tr>' for note in self.notes)
        return (
            f"<table><caption>{_esc(self.title)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            + (f"<tfoot>{foot}</tfoot>" if foot else "")
            + "</table>"
        )


def _table_row(row: list) -> str:
    cells = [f'<th scope="row">{_esc(_cell(row[0]))}</th>'] if row else []
    for value in row[1:]:
        numeric = isinstance(value, int | float)
        css = ' class="num"' if numeric else ""
        cells.append(f"<td{css}>{_esc(_cell(value))}</td>")
    return f"<tr>{''.join(cells)}</tr>"


def _cell(value: object) -> str:
    """Table text: full precision that a spreadsheet can read back (ASCII minus)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value == 0 or 1e-4 <= abs(value) < 1e15:  # plain decimals, no exponent
            return f"{value + 0.0:.6f}".rstrip("0").rstrip(".")
        return f"{value:.6g}"
    return str(value)


# --- public charts -----------------------------------------------------------


def waterfall(
    base_value: float,
    contributions: list[tuple[str, float]],
    output_value: float,
    *,
    title: str,
    value_label: str = "log-odds",
    secondary: Callable[[float], str] | None = None,
    max_bars: int = 12,
    legend: tuple[str, str] = DEFAULT_LEGEND,
) -> Chart:
    """SHAP waterfall: how each feature moves the model from its base value to this output.

    Bars are sorted by |contribution|; at most `max_bars` are drawn, the smallest folded
    into one "N other features" bar. The table lists every feature with its running total,
    which ends at the output: a gap between base + sum and the output (attributions that do
    not add up) is shown as its own "Not attributed" row rather than hidden.
    """
    columns = ["feature", "contribution", "running total"]
    base, output = _as_float(base_value), _as_float(output_value)
    finite, missing = _split_missing(contributions)
    if base is None or output is None or not finite:
        return _no_data(title, columns, "there are no attributions to show")
    ordered = sorted(finite, key=lambda item: -abs(item[1]))
    steps = _steps(base, ordered, output, max_bars)
    rows = _waterfall_rows(base, ordered, steps, output)
    ticks = nice_ticks(*_bounds([base, output, *(step.end for step in steps)]))
    decimals = _decimals(ticks[-1] - ticks[0])
    drawn = [s for s in steps if s.kind != "residual" or abs(s.value) > _visible(ticks)]
    svg = _Svg()
    top = _header(svg, title, _sign_legend(legend))
    rows_layout = _rows_layout(
        ["Base value", *(s.label for s in drawn), "Output"],
        ticks,
        top,
        text_width=max(_text_width(_step_text(s, decimals), SMALL) for s in drawn),
    )
    height = _x_axis(svg, rows_layout, len(drawn) + 2, f"Model output ({value_label})")
    _draw_waterfall(svg, rows_layout, base, drawn, output, decimals, secondary)
    notes = _missing_notes(missing)
    desc = _waterfall_desc(base, steps, output, decimals, value_label, secondary, notes)
    return _chart(svg, height, title, desc, columns, rows, notes)


def bar_chart(
    items: list[tuple[str, float]],
    *,
    title: str,
    value_label: str,
    signed: bool = True,
    legend: tuple[str, str] = DEFAULT_LEGEND,
) -> Chart:
    """Horizontal bars in the given order: LIME weights (signed) or mean |SHAP| (unsigned)."""
    columns = ["feature", value_label]
    values = [_as_float(value) for _, value in items]
    present = [v for v in values if v is not None]
    if not present:
        return _no_data(title, columns, "there are no values to show")
    ticks = _value_ticks(present)
    decimals = _decimals(ticks[-1] - ticks[0])
    svg = _Svg()
    top = _header(svg, title, _sign_legend(legend) if signed else [])
    labels = [label for label, _ in items]
    widest = max(_text_width(_num(v, decimals, signed=signed), SMALL) for v in present)
    layout = _rows_layout(labels, ticks, top, text_width=widest)
    height = _x_axis(svg, layout, len(items), value_label)
    _zero_line(svg, layout, len(items))
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        _draw_bar_row(svg, layout, index, label, value, decimals, signed)
    notes = _missing_notes([label for label, v in zip(labels, values, strict=True) if v is None])
    desc = _bar_desc(labels, values, decimals, value_label, signed, notes)
    rows = [[label, value] for label, value in zip(labels, values, strict=True)]
    return _chart(svg, height, title, desc, columns, rows, notes)


def histogram(
    counts: list[int],
    edges: list[float],
    *,
    title: str,
    x_label: str,
    y_label: str = "decisions",
) -> Chart:
    """Vertical bars from counts the database already aggregated (bin i is edges[i]..edges[i+1]).

    Raises ValueError when the bins are malformed: that is a bug in the caller, not data.
    """
    columns = [f"{x_label} from", "to", y_label]
    if not counts:
        return _no_data(title, columns, "there are no bins")
    edges = _check_bins(counts, edges)
    svg = _Svg()
    top = _header(svg, title, [])
    decimals = _edge_decimals(edges)
    labels = [_num(edge, decimals) for edge in edges]
    plot = _plot(top, _count_ticks(max(counts)), _text_width(labels[-1], SMALL) / 2 + 4)
    _y_axis(svg, plot, y_label)
    span = edges[-1] - edges[0]
    xs = [plot.left + (edge - edges[0]) / span * (plot.right - plot.left) for edge in edges]
    for index, count in enumerate(counts):
        gap = 0.5 if xs[index + 1] - xs[index] > 3 else 0.0
        svg.vbar(
            xs[index] + gap,
            xs[index + 1] - gap,
            plot.y(count),
            plot.y(0),
            NEUTRAL,
            data_kind="bin",
            data_count=str(count),
        )
    _edge_labels(svg, plot, xs, labels)
    height = _x_title(svg, plot, x_label)
    desc = _histogram_desc(counts, labels, x_label, y_label)
    rows = [[edges[i], edges[i + 1], count] for i, count in enumerate(counts)]
    return _chart(svg, height, title, desc, columns, rows, [])


def time_series(points: list[tuple[str, float]], *, title: str, y_label: str) -> Chart:
    """One bar per period, in the given order; a period without a value is marked "n/a"."""
    columns = ["period", y_label]
    values = [_as_float(value) for _, value in points]
    present = [v for v in values if v is not None]
    if not present:
        return _no_data(title, columns, "there are no values to show")
    labels = [_fit(label, 110, SMALL) for label, _ in points]
    label_width = max(_text_width(label, SMALL) for label in labels)
    svg = _Svg()
    top = _header(svg, title, [])
    plot = _plot(top, _value_ticks(present), label_width / 2 + 4)
    _y_axis(svg, plot, y_label)
    slot = (plot.right - plot.left) / len(points)
    for index, ((period, _), value) in enumerate(zip(points, values, strict=True)):
        _draw_period(svg, plot, plot.left + (index + 0.5) * slot, slot, period, value)
    _period_labels(svg, plot, labels, slot, label_width)
    height = _x_title(svg, plot, "period")
    notes = _missing_notes(
        [label for (label, _), v in zip(points, values, strict=True) if v is None]
    )
    desc = _series_desc(points, values, y_label, notes)
    rows = [[label, value] for (label, _), value in zip(points, values, strict=True)]
    return _chart(svg, height, title, desc, columns, rows, notes)


def strip_plot(
    series: list[tuple[str, list[float]]],
    *,
    title: str,
    x_label: str,
    max_points: int = 200,
    legend: tuple[str, str] = DEFAULT_LEGEND,
) -> Chart:
    """Spread of attributions per feature: one row each, a dot per value, a tick at the median.

    Rows with more than `max_points` values show an even subsample of the sorted values
    (so the minimum and maximum always appear); the table's statistics use every value.
    """
    columns = ["feature", "n", "min", "median", "max", "mean |value|"]
    cleaned = [(label, sorted(_present(values))) for label, values in series]
    everything = [v for _, values in cleaned for v in values]
    if not everything:
        return _no_data(title, columns, "there are no values to show")
    ticks = _value_ticks(everything)
    svg = _Svg()
    entries = [*_sign_legend(legend), (INK, "median", "line")]
    top = _header(svg, title, entries)
    layout = _rows_layout([label for label, _ in cleaned], ticks, top, row=STRIP_ROW)
    height = _x_axis(svg, layout, len(cleaned), x_label)
    _zero_line(svg, layout, len(cleaned))
    for index, (label, values) in enumerate(cleaned):
        _draw_strip_row(svg, layout, index, label, _subsample(values, max_points))
    rows = [_spread_row(label, values) for label, values in cleaned]
    notes = _strip_notes(series, cleaned, max_points)
    desc = _strip_desc(rows, _decimals(ticks[-1] - ticks[0]), x_label, notes)
    return _chart(svg, height, title, desc, columns, rows, notes)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values, steps of 1, 2 or 5 x 10^k, covering [low, high] in about `count` ticks.

    A single value (low == high) gets room around it. Raises ValueError for non-finite bounds.
    """
    low, high = _widen(low, high)
    magnitude = 10.0 ** math.floor(math.log10((high - low) / max(count, 1)))
    steps = [m * magnitude for m in (1, 2, 5, 10)]
    step = min(steps, key=lambda s: (abs(len(_tick_range(low, high, s)) - count), -s))
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    return [round(i * step, digits) + 0.0 for i in _tick_range(low, high, step)]


def _tick_range(low: float, high: float, step: float) -> range:
    # The tolerance stops 0.6 / 0.2 = 2.9999999999999996 from adding a needless tick.
    return range(math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9) + 1)


def _widen(low: float, high: float) -> tuple[float, float]:
    if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(high - low)):
        raise ValueError(f"nice_ticks needs finite bounds, got {low!r} and {high!r}")
    low, high = min(low, high), max(low, high)
    scale = max(abs(low), abs(high))
    if high - low <= max(scale * 1e-9, 1e-12):
        pad = scale * 0.1 or 1.0
        low, high = low - pad, high + pad
    return low, high


# --- waterfall pieces --------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    label: str
    value: float
    start: float
    kind: str = "contribution"  # or "residual": the part of the output nobody explained
    folded: int = 0  # how many features this bar stands for, when it is "N other features"

    @property
    def end(self) -> float:
        return self.start + self.value


def _steps(
    base: float, ordered: list[tuple[str, float]], output: float, max_bars: int
) -> list[_Step]:
    max_bars = max(1, max_bars)
    shown = ordered if len(ordered) <= max_bars else ordered[: max_bars - 1]
    rest = ordered[len(shown) :]
    bars = [(label, value, 0) for label, value in shown]
    if rest:
        bars.append((f"{len(rest)} other features", math.fsum(v for _, v in rest), len(rest)))
    steps, total = [], base
    for label, value, folded in bars:
        steps.append(_Step(_clean(label), value, total, folded=folded))
        total = math.fsum([total, value])
    residual = _residual(base, ordered, output)
    if residual:
        steps.append(_Step("Not attributed", residual, total, kind="residual"))
    return steps


def _residual(base: float, ordered: list[tuple[str, float]], output: float) -> float:
    """What base + sum(contributions) leaves unexplained, or 0.0 when it is rounding noise."""
    contributions = [value for _, value in ordered]
    residual = output - math.fsum([base, *contributions])
    scale = max(1.0, abs(base), abs(output), math.fsum(abs(v) for v in contributions))
    return residual if abs(residual) > 1e-9 * scale else 0.0


def _waterfall_rows(
    base: float, ordered: list[tuple[str, float]], steps: list[_Step], output: float
) -> list[list]:
    rows: list[list] = [["Base value", None, base]]
    terms = [base]
    for label, value in ordered:
        terms.append(value)
        rows.append([label, value, math.fsum(terms)])
    if steps[-1].kind == "residual":
        terms.append(steps[-1].value)
        rows.append(["Not attributed", steps[-1].value, math.fsum(terms)])
    rows.append(["Output", None, output])
    return rows


def _draw_waterfall(
    svg: _Svg,
    layout: _Rows,
    base: float,
    steps: list[_Step],
    output: float,
    decimals: int,
    secondary: Callable[[float], str] | None,
) -> None:
    _draw_marker(svg, layout, 0, "Base value", base, decimals, secondary, "base")
    for index, step in enumerate(steps, start=1):
        _connector(svg, layout, index, step.start)
        _draw_step(svg, layout, index, step, decimals)
    _connector(svg, layout, len(steps) + 1, steps[-1].end)
    _draw_marker(svg, layout, len(steps) + 1, "Output", output, decimals, secondary, "output")


def _draw_step(svg: _Svg, layout: _Rows, index: int, step: _Step, decimals: int) -> None:
    colour = UNATTRIBUTED if step.kind == "residual" else _sign_colour(step.value)
    muted = step.kind == "residual" or step.folded
    layout.label(svg, index, step.label, fill=MUTED if muted else INK, italic=bool(muted))
    attrs = {"data_kind": step.kind, "data_value": f"{step.value:.6g}"}
    if step.kind == "contribution":
        attrs = {"data_feature": step.label, **attrs}
    if step.folded:
        attrs["data_folded"] = str(step.folded)
    y = layout.bar_top(index)
    svg.hbar(layout.x(step.start), layout.x(step.end), y, BAR, colour, **attrs)
    _value_text(svg, layout, index, step.start, step.end, _step_text(step, decimals), colour)


def _step_text(step: _Step, decimals: int) -> str:
    """The bar's signed value; a residual is drawn only when it matters, so print its digits."""
    if step.kind == "residual" and step.value:
        decimals = min(9, max(decimals, 1 - math.floor(math.log10(abs(step.value)))))
    return _num(step.value, decimals, signed=True)


def _draw_marker(
    svg: _Svg,
    layout: _Rows,
    index: int,
    label: str,
    value: float,
    decimals: int,
    secondary: Callable[[float], str] | None,
    kind: str,
) -> None:
    """Base and output rows: a dark rule at the value, with the value (and e.g. probability)."""
    layout.label(svg, index, label, weight="600" if kind == "output" else "")
    x, y = layout.x(value), layout.bar_top(index)
    svg.line(x, y - 2, x, y + BAR + 2, INK, width=2.5, data_kind=kind, data_value=f"{value:.6g}")
    text = _num(value, decimals) + _secondary_text(secondary, value)
    right = x - layout.left < layout.right - x
    svg.text(
        x + (7 if right else -7),
        layout.baseline(index),
        text,
        size=SMALL,
        anchor="start" if right else "end",
        weight="600",
    )


def _secondary_text(secondary: Callable[[float], str] | None, value: float) -> str:
    if secondary is None:
        return ""
    try:
        return f" ({_clean(secondary(value))})"
    except (ArithmeticError, ValueError):  # e.g. exp() overflowing on extreme log-odds
        return ""


def _connector(svg: _Svg, layout: _Rows, index: int, value: float) -> None:
    """Dashed rule joining one row's end to the next row's start, as in SHAP's plots."""
    x = layout.x(value)
    top, bottom = layout.bar_top(index - 1) + BAR + 2, layout.bar_top(index) - 2
    svg.line(x, top, x, bottom, AXIS, stroke_dasharray="2 2")


def _value_text(
    svg: _Svg, layout: _Rows, index: int, start: float, end: float, text: str, colour: str
) -> None:
    """The signed number beyond the bar's far end, so it never sits on the bar itself."""
    forward = end >= start
    x = layout.x(end) + (4 if forward else -4)
    anchor = "start" if forward else "end"
    svg.text(x, layout.baseline(index), text, size=SMALL, anchor=anchor, fill=colour)


def _visible(ticks: list[float]) -> float:
    # Below a thousandth of the axis a residual bar is under a pixel and prints as zero.
    return (ticks[-1] - ticks[0]) * 1e-3


# --- bar and strip rows ------------------------------------------------------


def _draw_bar_row(
    svg: _Svg,
    layout: _Rows,
    index: int,
    label: str,
    value: float | None,
    decimals: int,
    signed: bool,
) -> None:
    layout.label(svg, index, label)
    if value is None:
        svg.text(
            layout.x(0) + 4,
            layout.baseline(index),
            "missing",
            size=SMALL,
            fill=MUTED,
            font_style="italic",
        )
        return
    colour = _sign_colour(value) if signed else NEUTRAL
    svg.hbar(
        layout.x(0),
        layout.x(value),
        layout.bar_top(index),
        BAR,
        colour,
        data_kind="bar",
        data_feature=_clean(label),
        data_value=f"{value:.6g}",
    )
    text = _num(value, decimals, signed=signed)
    _value_text(svg, layout, index, 0.0, value, text, colour if signed else INK)


def _draw_period(
    svg: _Svg, plot: _Plot, centre: float, slot: float, period: str, value: float | None
) -> None:
    """A period's bar; a period without a value is marked "n/a" rather than drawn as zero."""
    width = min(slot * 0.72, 48.0)
    if value is None:
        if slot >= 18:
            baseline = plot.y(0) - 4
            svg.text(centre, baseline, "n/a", size=10, anchor="middle", fill=MUTED)
        return
    top, bottom = plot.y(max(value, 0)), plot.y(min(value, 0))
    svg.vbar(
        centre - width / 2,
        centre + width / 2,
        top,
        bottom,
        NEUTRAL,
        data_kind="period",
        data_period=_clean(period),
        data_value=f"{value:.6g}",
    )


def _draw_strip_row(svg: _Svg, layout: _Rows, index: int, label: str, values: list[float]) -> None:
    layout.label(svg, index, label)
    centre = layout.bar_top(index) + BAR / 2
    if not values:
        svg.text(
            layout.left,
            layout.baseline(index),
            "no values",
            size=SMALL,
            fill=MUTED,
            font_style="italic",
        )
        return
    svg.line(layout.left, centre, layout.right, centre, GRID)
    spread = STRIP_ROW - 10
    for position, value in enumerate(values):
        y = centre + ((0.5 + position * GOLDEN) % 1.0 - 0.5) * spread
        svg.circle(layout.x(value), y, 2.6, _sign_colour(value), data_kind="point")
    median = layout.x(statistics.median(values))
    svg.line(median, centre - spread / 2 - 2, median, centre + spread / 2 + 2, INK, width=2)


def _subsample(values: list[float], limit: int) -> list[float]:
    """An even, deterministic subsample of sorted values; it keeps the extremes."""
    limit = max(1, limit)
    if len(values) <= limit:
        return values
    if limit == 1:
        return [values[(len(values) - 1) // 2]]
    return [values[round(i * (len(values) - 1) / (limit - 1))] for i in range(limit)]


def _spread_row(label: str, values: list[float]) -> list:
    if not values:
        return [label, 0, None, None, None, None]
    mean_abs = math.fsum(abs(v) for v in values) / len(values)
    return [label, len(values), values[0], statistics.median(values), values[-1], mean_abs]


# --- layouts -----------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """Charts with one labelled row per item and the value axis along x."""

    top: float
    row: float
    label_right: float
    label_width: float
    left: float
    right: float
    ticks: list[float]

    def x(self, value: float) -> float:
        low, high = self.ticks[0], self.ticks[-1]
        return round(self.left + (value - low) / (high - low) * (self.right - self.left), 2)

    def bar_top(self, index: int) -> float:
        return self.top + index * self.row + (self.row - BAR) / 2

    def baseline(self, index: int) -> float:
        return self.bar_top(index) + BAR / 2 + SMALL * 0.35

    def label(self, svg: _Svg, index: int, text: str, *, italic: bool = False, **style) -> None:
        """One line when it fits; else two smaller ones (a LIME rule is long), cut only beyond."""
        extra = {"font_style": "italic"} if italic else {}
        middle = self.bar_top(index) + BAR / 2
        if _text_width(_clean(text), FONT) <= self.label_width:
            svg.text(
                self.label_right, middle + FONT * 0.35, _clean(text), anchor="end", **style, **extra
            )
            return
        lines = _wrap(text, self.label_width, SMALL, lines=2)
        top = middle + SMALL * 0.35 - (len(lines) - 1) * SMALL / 2
        svg.text_lines(
            self.label_right, top, lines, size=SMALL, anchor="end", full=text, **style, **extra
        )


def _rows_layout(
    labels: Sequence[str], ticks: list[float], top: float, *, text_width: float = 0.0, row=ROW
) -> _Rows:
    """Room for the labels on the left, and for value texts beyond both ends of the axis."""
    widest = max((_text_width(_clean(label), FONT) for label in labels), default=0.0)
    label_width = min(widest, WIDTH * LABEL_SHARE)
    decimals = _tick_decimals(ticks)
    tick_half = max(_text_width(_num(t, decimals), SMALL) for t in ticks) / 2
    room = max(text_width + 8, tick_half + 2)
    left = PAD + label_width + 10 + room
    return _Rows(top, row, PAD + label_width, label_width, left, WIDTH - PAD - room, ticks)


def _x_axis(svg: _Svg, layout: _Rows, rows: int, label: str) -> float:
    """Grid, tick labels and axis title under the rows; returns the chart's height."""
    bottom = layout.top + rows * layout.row
    decimals = _tick_decimals(layout.ticks)
    for tick in layout.ticks:
        x = layout.x(tick)
        svg.line(x, layout.top, x, bottom, GRID)
        svg.text(x, bottom + 15, _num(tick, decimals), size=SMALL, anchor="middle", fill=MUTED)
    svg.line(layout.left, bottom, layout.right, bottom, AXIS)
    title = _fit(label, layout.right - layout.left, FONT)
    svg.text((layout.left + layout.right) / 2, bottom + 34, title, anchor="middle", fill=MUTED)
    return bottom + 34 + PAD - 4


def _zero_line(svg: _Svg, layout: _Rows, rows: int) -> None:
    x = layout.x(0)
    svg.line(x, layout.top, x, layout.top + rows * layout.row, AXIS, width=1.25)


@dataclass(frozen=True)
class _Plot:
    """Vertical-bar charts: the value axis up the left, bins or periods along x."""

    left: float
    right: float
    top: float
    bottom: float
    ticks: list[float]

    def y(self, value: float) -> float:
        low, high = self.ticks[0], self.ticks[-1]
        return round(self.bottom - (value - low) / (high - low) * (self.bottom - self.top), 2)


def _plot(top: float, ticks: list[float], right_room: float) -> _Plot:
    decimals = _tick_decimals(ticks)
    tick_width = max(_text_width(_num(t, decimals), SMALL) for t in ticks)
    left = PAD + 22 + tick_width
    return _Plot(left, WIDTH - max(PAD, right_room), top + 6, top + 6 + PLOT_HEIGHT, ticks)


def _y_axis(svg: _Svg, plot: _Plot, label: str) -> None:
    decimals = _tick_decimals(plot.ticks)
    for tick in plot.ticks:
        y = plot.y(tick)
        svg.line(plot.left, y, plot.right, y, AXIS if tick == 0 else GRID)
        svg.text(
            plot.left - 6,
            y + SMALL * 0.35,
            _num(tick, decimals),
            size=SMALL,
            anchor="end",
            fill=MUTED,
        )
    x, middle = PAD + 4, (plot.top + plot.bottom) / 2
    title = _fit(label, PLOT_HEIGHT, FONT)
    svg.text(
        x, middle, title, anchor="middle", fill=MUTED, transform=f"rotate(-90 {_n(x)} {_n(middle)})"
    )


def _x_title(svg: _Svg, plot: _Plot, label: str) -> float:
    title = _fit(label, plot.right - plot.left, FONT)
    svg.text((plot.left + plot.right) / 2, plot.bottom + 36, title, anchor="middle", fill=MUTED)
    return plot.bottom + 36 + PAD - 4


def _edge_labels(svg: _Svg, plot: _Plot, xs: list[float], labels: list[str]) -> None:
    """Label every k-th bin edge, k in 1, 2, 5, 10, ... so labels fall on round values."""
    room = max(_text_width(label, SMALL) for label in labels) + 10
    narrowest = min(b - a for a, b in itertools.pairwise(xs))
    every = next(k for k in _one_two_five() if k * narrowest >= room or k >= len(xs))
    for index in range(0, len(xs), every):
        svg.line(xs[index], plot.bottom, xs[index], plot.bottom + 4, AXIS)
        svg.text(
            xs[index], plot.bottom + 16, labels[index], size=SMALL, anchor="middle", fill=MUTED
        )


def _one_two_five() -> Iterator[int]:
    for power in itertools.count():
        for mantissa in (1, 2, 5):
            yield mantissa * 10**power


def _period_labels(
    svg: _Svg, plot: _Plot, labels: list[str], slot: float, label_width: float
) -> None:
    """Every k-th period label, k chosen so that labels never overlap."""
    fits = max(1, math.floor((plot.right - plot.left) / (label_width + 12)))
    every = math.ceil(len(labels) / min(fits, MAX_PERIOD_LABELS))
    for index in range(0, len(labels), every):
        x = plot.left + (index + 0.5) * slot
        svg.line(x, plot.bottom, x, plot.bottom + 4, AXIS)
        svg.text(x, plot.bottom + 16, labels[index], size=SMALL, anchor="middle", fill=MUTED)


# --- header, legend, document ------------------------------------------------


def _header(svg: _Svg, title: str, legend: Sequence[tuple[str, str, str]]) -> float:
    """Visible title and legend (colour, text, shape); returns where the plot may start."""
    svg.text(
        PAD,
        PAD + TITLE_FONT,
        _fit(title, WIDTH - 2 * PAD, TITLE_FONT),
        size=TITLE_FONT,
        weight="600",
        full=title,
    )
    y, x = PAD + TITLE_FONT + 10, float(PAD)
    for colour, text, shape in legend:
        if shape == "line":
            svg.line(x + 5, y, x + 5, y + 11, colour, width=2)
        else:
            svg.rect(x, y + 1, 10, 10, colour)
        label = _fit(text, 260, SMALL)
        svg.text(x + 15, y + 10, label, size=SMALL, fill=MUTED, full=text)
        x += 15 + _text_width(label, SMALL) + 14
    return y + (24 if legend else 4)


def _sign_legend(legend: tuple[str, str]) -> list[tuple[str, str, str]]:
    return [(POSITIVE, legend[0], "box"), (NEGATIVE, legend[1], "box")]


def _sign_colour(value: float) -> str:
    if value == 0:
        return MUTED
    return POSITIVE if value > 0 else NEGATIVE


def _chart(
    svg: _Svg,
    height: float,
    title: str,
    desc: str,
    columns: list[str],
    rows: list[list],
    notes: list[str],
) -> Chart:
    return Chart(_document(svg, height, title, desc), title, columns, rows, notes)


def _no_data(title: str, columns: list[str], reason: str) -> Chart:
    """A chart that says so rather than an error: an empty period is normal, not a bug."""
    svg = _Svg()
    top = _header(svg, title, [])
    svg.rect(PAD, top + 4, WIDTH - 2 * PAD, 64, "#f6f7f9")
    svg.text(WIDTH / 2, top + 41, "No data", size=TITLE_FONT, anchor="middle", fill=MUTED)
    desc = f"No data: {reason}."
    document = _document(svg, top + 68 + PAD, f"{title} \u2014 No data", desc)
    return Chart(document, title, columns, [], [desc])


def _document(svg: _Svg, height: float, title: str, desc: str) -> str:
    """The <svg> element: scalable, labelled by its title and described by its desc."""
    title_text, desc_text, body = _esc(title), _esc(desc), "".join(svg.parts)
    digest = hashlib.sha256(f"{title_text}\n{desc_text}\n{body}".encode()).hexdigest()[:10]
    uid = f"chart-{digest}"  # same input, same id: deterministic, yet distinct per chart
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-labelledby="{uid}-title {uid}-desc" viewBox="0 0 {WIDTH} {_n(height)}" '
        f'width="100%" font-family="{FONT_FAMILY}" font-size="{FONT}" fill="{INK}">'
        f'<title id="{uid}-title">{title_text}</title><desc id="{uid}-desc">{desc_text}</desc>'
        f"{body}</svg>"
    )


class _Svg:
    """Collects elements; every number passes through _n and every text through _esc."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def rect(self, x: float, y: float, width: float, height: float, fill: str, **attrs) -> None:
        self.parts.append(
            f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(width)}" height="{_n(height)}" '
            f'fill="{fill}"{_attrs(attrs)}/>'
        )

    def hbar(self, x0: float, x1: float, y: float, height: float, fill: str, **attrs) -> None:
        # Round the ends, not the width, so a bar ends exactly where the next one starts.
        left, right = sorted((round(x0, 2), round(x1, 2)))
        self.rect(left, y, right - left, height, fill, **attrs)

    def vbar(self, x0: float, x1: float, y0: float, y1: float, fill: str, **attrs) -> None:
        top, bottom = sorted((round(y0, 2), round(y1, 2)))
        self.rect(round(x0, 2), top, round(x1, 2) - round(x0, 2), bottom - top, fill, **attrs)

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        stroke: str,
        *,
        width: float = 1.0,
        **attrs,
    ) -> None:
        self.parts.append(
            f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" '
            f'stroke-width="{_n(width)}"{_attrs(attrs)}/>'
        )

    def circle(self, x: float, y: float, radius: float, fill: str, **attrs) -> None:
        self.parts.append(
            f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{_n(radius)}" fill="{fill}" '
            f'fill-opacity="0.6"{_attrs(attrs)}/>'
        )

    def text(
        self,
        x: float,
        y: float,
        content: str,
        *,
        size: int = FONT,
        anchor: str = "start",
        fill: str = INK,
        weight: str = "",
        full: str | None = None,
        **attrs,
    ) -> None:
        """Text; `full` is the untruncated version, kept as a tooltip when they differ."""
        style = "" if size == FONT else f' font-size="{size}"'
        style += "" if anchor == "start" else f' text-anchor="{anchor}"'
        style += "" if fill == INK else f' fill="{fill}"'
        style += f' font-weight="{weight}"' if weight else ""
        element = f'<text x="{_n(x)}" y="{_n(y)}"{style}{_attrs(attrs)}>{_esc(content)}</text>'
        if full is not None and _clean(full) != _clean(content):
            element = f"<g><title>{_esc(full)}</title>{element}</g>"
        self.parts.append(element)

    def text_lines(
        self, x: float, y: float, lines: list[str], *, size: int, anchor: str, full: str, **attrs
    ) -> None:
        """Text on several lines from baseline `y` down, the whole kept as a tooltip."""
        spans = "".join(
            f'<tspan x="{_n(x)}" dy="{0 if i == 0 else size}">{_esc(line)}</tspan>'
            for i, line in enumerate(lines)
        )
        self.parts.append(
            f'<g><title>{_esc(full)}</title><text x="{_n(x)}" y="{_n(y)}" font-size="{size}" '
            f'text-anchor="{anchor}"{_attrs(attrs)}>{spans}</text></g>'
        )


def _attrs(attrs: dict[str, str]) -> str:
    return "".join(f' {name.replace("_", "-")}="{_esc(value)}"' for name, value in attrs.items())


# --- descriptions ------------------------------------------------------------


def _waterfall_desc(
    base: float,
    steps: list[_Step],
    output: float,
    decimals: int,
    unit: str,
    secondary: Callable[[float], str] | None,
    notes: list[str],
) -> str:
    def value(v: float) -> str:
        return f"{_num(v, decimals)} {unit}{_secondary_text(secondary, v)}"

    features = [s for s in steps if s.kind == "contribution" and not s.folded]
    named = ", ".join(f"{s.label} {_num(s.value, decimals, True)}" for s in features[:5])
    parts = [f"Starts at the base value {value(base)} and ends at the output {value(output)}."]
    if named:
        parts.append(f"Largest contributions: {named}.")
    for step in steps:
        if step.folded:
            parts.append(f"{step.label} together contribute {_num(step.value, decimals, True)}.")
        if step.kind == "residual":
            parts.append(f"Not attributed to any feature: {_step_text(step, decimals)}.")
    return " ".join(parts + notes)


def _bar_desc(
    labels: list[str],
    values: list[float | None],
    decimals: int,
    unit: str,
    signed: bool,
    notes: list[str],
) -> str:
    pairs = [(label, v) for label, v in zip(labels, values, strict=True) if v is not None]
    ranked = sorted(pairs, key=lambda pair: -abs(pair[1]))[:5]
    named = ", ".join(f"{_clean(label)} {_num(v, decimals, signed)}" for label, v in ranked)
    return " ".join([f"{len(pairs)} bars of {unit}. Largest: {named}.", *notes])


def _histogram_desc(counts: list[int], labels: list[str], x_label: str, y_label: str) -> str:
    total = sum(counts)
    summary = f"{total:,} {y_label} in {len(counts)} bins of {x_label}"
    summary += f" from {labels[0]} to {labels[-1]}."
    if total == 0:
        return summary + " Every bin is empty."
    peak = max(range(len(counts)), key=counts.__getitem__)
    return (
        summary + f" The fullest bin, {labels[peak]} to {labels[peak + 1]}, holds {counts[peak]:,}."
    )


def _series_desc(
    points: list[tuple[str, float]], values: list[float | None], unit: str, notes: list[str]
) -> str:
    present = [(_clean(label), v) for (label, _), v in zip(points, values, strict=True)]
    present = [(label, v) for label, v in present if v is not None]
    decimals = _auto_decimals([v for _, v in present])
    high, low = max(present, key=lambda p: p[1]), min(present, key=lambda p: p[1])
    total = _num(math.fsum(v for _, v in present), decimals)
    parts = [
        f"{len(points)} periods from {_clean(points[0][0])} to {_clean(points[-1][0])}.",
        f"Total {total} {unit}; highest {_num(high[1], decimals)} on {high[0]};",
        f"lowest {_num(low[1], decimals)} on {low[0]}.",
    ]
    return " ".join(parts + notes)


def _strip_desc(rows: list[list], decimals: int, unit: str, notes: list[str]) -> str:
    parts = [f"Spread of {unit} for {len(rows)} features."]
    for label, n, low, median, high, _ in rows[:8]:
        if n:
            parts.append(
                f"{_clean(label)}: {n} values from {_num(low, decimals)} to "
                f"{_num(high, decimals)}, median {_num(median, decimals)}."
            )
    if len(rows) > 8:
        parts.append(f"{len(rows) - 8} more features in the table.")
    return " ".join(parts + notes)


def _missing_notes(labels: Sequence[str]) -> list[str]:
    if not labels:
        return []
    names = ", ".join(_clean(label) for label in labels)
    return [f"Not shown, no numeric value (missing, NaN or infinite): {names}."]


def _strip_notes(
    series: list[tuple[str, list[float]]], cleaned: list[tuple[str, list[float]]], limit: int
) -> list[str]:
    notes = []
    for (label, raw), (_, values) in zip(series, cleaned, strict=True):
        if len(raw) > len(values):
            notes.append(f"{_clean(label)}: {len(raw) - len(values)} non-numeric values skipped.")
        if len(values) > max(1, limit):
            notes.append(f"{_clean(label)}: {max(1, limit)} of {len(values)} values drawn.")
    return notes


# --- numbers and text --------------------------------------------------------


def _as_float(value: object) -> float | None:
    """The value as a finite float, or None when it is missing, NaN or infinite."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _present(values: Sequence[object]) -> list[float]:
    return [v for v in (_as_float(value) for value in values) if v is not None]


def _split_missing(
    items: Sequence[tuple[str, float]],
) -> tuple[list[tuple[str, float]], list[str]]:
    finite, missing = [], []
    for label, value in items:
        number = _as_float(value)
        if number is None:
            missing.append(label)
        else:
            finite.append((label, number))
    return finite, missing


def _bounds(values: Sequence[float]) -> tuple[float, float]:
    return min(values), max(values)


def _value_ticks(values: Sequence[float]) -> list[float]:
    """Ticks for bars that grow from zero: the axis always includes 0."""
    low, high = min(0.0, *values), max(0.0, *values)
    return nice_ticks(low, high if high > low else 1.0)


def _count_ticks(high: float) -> list[float]:
    ticks = nice_ticks(0.0, max(high, 1.0))
    if ticks[1] - ticks[0] < 1:  # counts are whole numbers: a tick at 0.5 would mislead
        return [float(i) for i in range(math.ceil(max(high, 1.0)) + 1)]
    return ticks


def _check_bins(counts: list[int], edges: list[float]) -> list[float]:
    if len(edges) != len(counts) + 1:
        raise ValueError(f"{len(counts)} bins need {len(counts) + 1} edges, got {len(edges)}")
    numbers = [_as_float(edge) for edge in edges]
    if any(e is None for e in numbers) or any(b <= a for a, b in itertools.pairwise(numbers)):
        raise ValueError("bin edges must be finite and strictly increasing")
    if any(count < 0 for count in counts):
        raise ValueError("bin counts cannot be negative")
    return numbers  # type: ignore[return-value]


def _decimals(span: float) -> int:
    """Decimals that resolve about a hundredth of the axis span."""
    if not span > 0:
        return 2
    return min(6, max(0, 2 - math.floor(math.log10(span))))


def _tick_decimals(ticks: list[float]) -> int:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    return max(0, -math.floor(math.log10(step) + 1e-9))


def _edge_decimals(edges: list[float]) -> int:
    """The fewest decimals that write every edge exactly, capped at the span's precision."""
    cap = _decimals(edges[-1] - edges[0])
    for digits in range(cap + 1):
        if all(abs(round(e, digits) - e) <= 1e-9 * max(1.0, abs(e)) for e in edges):
            return digits
    return cap


def _auto_decimals(values: Sequence[float]) -> int:
    if all(float(v).is_integer() for v in values):
        return 0
    return _decimals(max(values) - min(values) or max(abs(v) for v in values))


def _num(value: float, decimals: int, signed: bool = False) -> str:
    """A number for reading: thousands separators, a true minus sign, no '-0'."""
    value = round(value, decimals) + 0.0
    text = f"{value:{'+' if signed and value else ''},.{decimals}f}"
    return text.replace("-", MINUS)


def _n(value: float) -> str:
    """A coordinate: at most two decimals, never NaN."""
    if not math.isfinite(value):
        raise ValueError(f"non-finite coordinate {value!r}")
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _clean(text: object) -> str:
    """User text made safe for XML 1.0: forbidden characters dropped, whitespace collapsed."""
    return " ".join(_XML_ILLEGAL.sub("", str(text)).split())


def _esc(text: object) -> str:
    return html.escape(_clean(text), quote=True)


def _fit(text: str, width: float, size: float) -> str:
    """Shorten text with an ellipsis to fit `width` (estimated: no font metrics here)."""
    text = _clean(text)
    limit = max(2, int(width / (size * CHAR_EM)))
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _wrap(text: str, width: float, size: float, *, lines: int) -> list[str]:
    """Words laid out on at most `lines` lines of `width`; the last one cut if still too long."""
    limit = max(2, int(width / (size * CHAR_EM)))
    laid: list[str] = []
    for word in _clean(text).split(" "):
        if laid and len(laid[-1]) + 1 + len(word) <= limit:
            laid[-1] = f"{laid[-1]} {word}"
        else:
            laid.append(word)
    kept = [*laid[: lines - 1], " ".join(laid[lines - 1 :])]
    return [_fit(line, width, size) for line in kept if line]


def _text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR_EM
