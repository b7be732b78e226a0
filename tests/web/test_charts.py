"""Server-side SVG charts: the numbers they draw, their accessibility, and odd input."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditapp import charts
from auditapp.charts import Chart, nice_ticks

NS = "{http://www.w3.org/2000/svg}"
GEOMETRY = ("x", "y", "width", "height", "x1", "y1", "x2", "y2", "cx", "cy", "r")


def parse(chart: Chart) -> ET.Element:
    root = ET.fromstring(chart.svg)  # noqa: S314 - our own markup; raises unless well-formed
    assert root.tag == f"{NS}svg"
    return root


def marks(root: ET.Element, kind: str) -> list[ET.Element]:
    return [element for element in root.iter() if element.get("data-kind") == kind]


def texts(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter(f"{NS}text")]


def svg_title(root: ET.Element) -> str:
    return root.find(f"{NS}title").text


def svg_desc(root: ET.Element) -> str:
    return root.find(f"{NS}desc").text


def bar_end(rect: ET.Element) -> float:
    """Where a horizontal bar ends: its right edge when it grows right, else its left edge."""
    left = float(rect.get("x"))
    return left + float(rect.get("width")) if float(rect.get("data-value")) >= 0 else left


def assert_geometry_is_finite(root: ET.Element) -> None:
    for element in list(root.iter())[1:]:  # the <svg> itself is width="100%"
        for name in GEOMETRY:
            if name in element.attrib:
                assert math.isfinite(float(element.get(name))), (element.tag, name)


def probability(value: float) -> str:
    return f"{1 / (1 + math.exp(-value)):.1%}"


CONTRIBUTIONS = [("age", -0.3), ("income", 0.8), ("debt", 0.2)]


def small_waterfall(**options) -> Chart:
    return charts.waterfall(0.3, CONTRIBUTIONS, 1.0, title="Why this decision", **options)


# --- waterfall ---------------------------------------------------------------


def test_waterfall_is_an_accessible_svg_that_scales():
    root = parse(small_waterfall())

    assert root.get("role") == "img"
    assert root.get("width") == "100%"
    assert root.get("viewBox").startswith("0 0 720 ")
    title_id, desc_id = root.get("aria-labelledby").split()
    assert root.find(f"{NS}title").get("id") == title_id
    assert root.find(f"{NS}desc").get("id") == desc_id
    assert svg_title(root) == "Why this decision"
    assert "Model output (log-odds)" in texts(root)


def test_waterfall_desc_states_the_numbers_in_words():
    desc = svg_desc(parse(small_waterfall(secondary=probability)))

    assert "base value 0.30 log-odds (57.4%)" in desc
    assert "output 1.00 log-odds (73.1%)" in desc
    assert "income +0.80, age \u22120.30, debt +0.20" in desc


def test_waterfall_draws_one_bar_per_feature_largest_first():
    root = parse(small_waterfall())

    bars = marks(root, "contribution")
    assert [bar.get("data-feature") for bar in bars] == ["income", "age", "debt"]
    assert [float(bar.get("data-value")) for bar in bars] == [0.8, -0.3, 0.2]


def test_waterfall_bars_start_where_the_previous_one_ended():
    root = parse(small_waterfall())

    base = float(marks(root, "base")[0].get("x1"))
    starts = []
    for bar in marks(root, "contribution"):
        left, right = float(bar.get("x")), float(bar.get("x")) + float(bar.get("width"))
        starts.append(left if float(bar.get("data-value")) >= 0 else right)
    ends = [base, *(bar_end(bar) for bar in marks(root, "contribution"))]
    assert starts == pytest.approx(ends[:-1], abs=0.011)


def test_waterfall_last_bar_ends_at_the_output_marker():
    root = parse(small_waterfall())

    output_x = float(marks(root, "output")[0].get("x1"))
    assert bar_end(marks(root, "contribution")[-1]) == pytest.approx(output_x, abs=0.011)


def test_waterfall_colours_bars_by_sign_and_says_which_is_which():
    root = parse(small_waterfall())

    fills = [bar.get("fill") for bar in marks(root, "contribution")]
    assert fills == [charts.POSITIVE, charts.NEGATIVE, charts.POSITIVE]
    assert {"Raises the prediction", "Lowers the prediction"} <= set(texts(root))


def test_waterfall_table_has_every_feature_with_a_running_total_ending_at_the_output():
    chart = small_waterfall()

    assert chart.columns == ["feature", "contribution", "running total"]
    assert chart.rows[0] == ["Base value", None, 0.3]
    assert [row[:2] for row in chart.rows[1:-1]] == [["income", 0.8], ["age", -0.3], ["debt", 0.2]]
    assert [row[2] for row in chart.rows[1:-1]] == pytest.approx([1.1, 0.8, 1.0])
    assert chart.rows[-1] == ["Output", None, 1.0]
    assert chart.rows[-2][2] == pytest.approx(1.0, abs=1e-9)


def test_waterfall_folds_the_smallest_features_beyond_max_bars():
    contributions = [(f"f{i}", (-1) ** i * (20 - i) / 10) for i in range(15)]
    output = 0.5 + math.fsum(v for _, v in contributions)
    chart = charts.waterfall(0.5, contributions, output, title="Many", max_bars=5)
    root = parse(chart)

    bars = marks(root, "contribution")
    assert len(bars) == 5
    assert [bar.get("data-feature") for bar in bars[:4]] == ["f0", "f1", "f2", "f3"]
    assert bars[-1].get("data-feature") == "11 other features"
    assert bars[-1].get("data-folded") == "11"
    folded = math.fsum(v for _, v in contributions[4:])
    assert float(bars[-1].get("data-value")) == pytest.approx(folded, abs=1e-5)
    assert len(chart.rows) == 15 + 2  # the table still lists every feature
    output_x = float(marks(root, "output")[0].get("x1"))
    assert bar_end(bars[-1]) == pytest.approx(output_x, abs=0.011)


def test_waterfall_shows_what_the_attributions_do_not_explain():
    chart = charts.waterfall(0.3, CONTRIBUTIONS, 1.3, title="Does not add up")
    root = parse(chart)

    assert len(marks(root, "contribution")) == 3
    residual = marks(root, "residual")
    assert len(residual) == 1
    assert float(residual[0].get("data-value")) == pytest.approx(0.3)
    assert bar_end(residual[0]) == pytest.approx(
        float(marks(root, "output")[0].get("x1")), abs=0.011
    )
    assert chart.rows[-2][0] == "Not attributed"
    assert chart.rows[-2][2] == pytest.approx(1.3, abs=1e-9)
    assert "Not attributed to any feature: +0.30" in svg_desc(root)


def test_waterfall_ignores_rounding_noise_in_additivity():
    chart = charts.waterfall(0.3, CONTRIBUTIONS, 1.0 + 1e-12, title="Float noise")

    assert not marks(parse(chart), "residual")
    assert "Not attributed" not in [row[0] for row in chart.rows]


def test_waterfall_secondary_text_is_shown_on_base_and_output_rows():
    root = parse(small_waterfall(secondary=probability))

    assert "0.30 (57.4%)" in texts(root)
    assert "1.00 (73.1%)" in texts(root)


def test_waterfall_survives_a_secondary_that_overflows():
    chart = charts.waterfall(-800.0, [("a", -1.0)], -801.0, title="Extreme", secondary=probability)

    assert "\u2212801" in " ".join(texts(parse(chart)))


def test_waterfall_leaves_out_and_names_features_without_a_number():
    contributions = [*CONTRIBUTIONS, ("broken", float("nan")), ("huge", float("inf"))]
    chart = charts.waterfall(0.3, contributions, 1.0, title="Missing")
    root = parse(chart)

    assert [b.get("data-feature") for b in marks(root, "contribution")] == ["income", "age", "debt"]
    assert "broken, huge" in svg_desc(root)
    assert "broken, huge" in chart.notes[0]
    assert_geometry_is_finite(root)


# --- escaping, determinism, tables ------------------------------------------


def test_labels_are_escaped_and_the_svg_still_parses():
    name = "<script>alert('x')</script> & co"
    chart = charts.waterfall(0.0, [(name, 0.5)], 0.5, title='Title "<b>"')
    root = parse(chart)

    assert "<script>" not in chart.svg
    assert "&lt;script&gt;" in chart.svg
    assert marks(root, "contribution")[0].get("data-feature") == name
    assert name in texts(root)
    assert svg_title(root) == 'Title "<b>"'
    assert "<script>" not in chart.table_html()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in chart.table_html()


def test_characters_xml_forbids_are_dropped_from_labels():
    chart = charts.bar_chart([("bell\x07 and\x00 null", 1.0)], title="T\x0b", value_label="w")

    root = parse(chart)
    assert "bell and null" in texts(root)


def line_texts(root: ET.Element) -> list[list[str]]:
    """Each <text>'s lines: its own text, or its <tspan>s' when it wraps."""
    shown = []
    for element in root.iter(f"{NS}text"):
        spans = element.findall(f"{NS}tspan")
        shown.append([span.text or "" for span in spans] if spans else [element.text or ""])
    return shown


def test_a_lime_rule_too_long_for_one_line_wraps_onto_two_whole():
    rule = "Annual income (EUR) > 30,000.00 and ≤ 52,500.00"
    root = parse(charts.bar_chart([(rule, 0.2), ("Age ≤ 35", -0.1)], title="LIME", value_label="w"))

    wrapped = [lines for lines in line_texts(root) if lines[0].startswith("Annual")]
    assert wrapped == [["Annual income (EUR) > 30,000.00", "and ≤ 52,500.00"]]
    assert ["Age ≤ 35"] in line_texts(root)


def test_labels_too_long_even_for_two_lines_are_shortened_but_kept_whole_as_a_tooltip():
    name = "A very long feature name that goes on and on and on and on and on and on forever"
    root = parse(charts.bar_chart([(name, 1.0)], title="Long", value_label="weight"))

    shown = [lines for lines in line_texts(root) if lines[0].startswith("A very long")]
    assert shown and shown[0][-1].endswith("\u2026")
    assert len(" ".join(shown[0])) < len(name)
    assert name in [element.text for element in root.iter(f"{NS}title")]


def every_chart() -> list[Chart]:
    return [
        small_waterfall(secondary=probability),
        charts.bar_chart(CONTRIBUTIONS, title="LIME", value_label="weight"),
        charts.histogram([1, 4, 2], [0.0, 0.5, 0.75, 1.0], title="Scores", x_label="score"),
        charts.time_series([("2026-11-20", 3), ("2026-11-21", 5)], title="Daily", y_label="n"),
        charts.strip_plot([("age", [0.1, -0.2, 0.3]), ("income", [0.5])], title="S", x_label="x"),
    ]


def test_rendering_is_deterministic():
    first, second = every_chart(), every_chart()

    for one, other in zip(first, second, strict=True):
        assert one.svg == other.svg
        assert one.table_html() == other.table_html()


def test_each_chart_has_its_own_ids_so_a_page_can_hold_several():
    ids = [parse(chart).find(f"{NS}title").get("id") for chart in every_chart()]

    assert len(set(ids)) == len(ids)


def test_coordinates_are_rounded_to_two_decimals():
    for chart in every_chart():
        for element in list(parse(chart).iter())[1:]:
            for name in GEOMETRY:
                value = element.get(name)
                if value is not None:
                    assert len(value.partition(".")[2]) <= 2, (name, value)


def test_table_html_has_a_caption_headers_and_numbers():
    html = small_waterfall().table_html()

    assert html.startswith("<table><caption>Why this decision</caption>")
    assert '<th scope="col">running total</th>' in html
    assert '<th scope="row">income</th><td class="num">0.8</td><td class="num">1.1</td>' in html
    assert '<th scope="row">Base value</th><td></td><td class="num">0.3</td>' in html


# --- bar chart ---------------------------------------------------------------


def test_bar_chart_keeps_the_given_order_and_colours_by_sign():
    items = [("b", 0.1), ("a", -0.4), ("c", 0.25)]
    chart = charts.bar_chart(items, title="LIME weights", value_label="weight")
    root = parse(chart)

    bars = marks(root, "bar")
    assert [bar.get("data-feature") for bar in bars] == ["b", "a", "c"]
    assert [bar.get("fill") for bar in bars] == [charts.POSITIVE, charts.NEGATIVE, charts.POSITIVE]
    assert chart.rows == [["b", 0.1], ["a", -0.4], ["c", 0.25]]
    assert chart.columns == ["feature", "weight"]
    assert {"+0.100", "\u22120.400", "+0.250", "weight"} <= set(texts(root))


def test_bar_chart_bars_grow_from_the_zero_line_in_proportion():
    root = parse(charts.bar_chart([("a", 0.2), ("b", -0.4)], title="T", value_label="w"))

    first, second = marks(root, "bar")
    zero = float(first.get("x"))
    assert float(second.get("x")) + float(second.get("width")) == pytest.approx(zero)
    assert float(second.get("width")) == pytest.approx(2 * float(first.get("width")), abs=0.02)


def test_unsigned_bar_chart_uses_one_colour_and_no_sign_legend():
    items = [("income", 0.3), ("age", 0.1)]
    root = parse(
        charts.bar_chart(items, title="Importance", value_label="mean |SHAP|", signed=False)
    )

    assert {bar.get("fill") for bar in marks(root, "bar")} == {charts.NEUTRAL}
    assert "Raises the prediction" not in texts(root)
    assert "0.300" in texts(root)


def test_bar_chart_marks_a_missing_value_instead_of_drawing_it():
    chart = charts.bar_chart([("a", 0.2), ("b", float("nan"))], title="T", value_label="w")
    root = parse(chart)

    assert [bar.get("data-feature") for bar in marks(root, "bar")] == ["a"]
    assert "missing" in texts(root)
    assert chart.rows == [["a", 0.2], ["b", None]]
    assert "b." in svg_desc(root)


# --- histogram ---------------------------------------------------------------


def test_histogram_bar_heights_are_proportional_to_counts():
    counts = [3, 12, 0, 40, 25]
    chart = charts.histogram(counts, [0, 0.2, 0.4, 0.6, 0.8, 1.0], title="Scores", x_label="score")
    root = parse(chart)

    bins = marks(root, "bin")
    assert [int(b.get("data-count")) for b in bins] == counts
    heights = [float(b.get("height")) for b in bins]
    per_decision = heights[3] / 40
    assert heights == pytest.approx([c * per_decision for c in counts], abs=0.02)
    bottoms = {round(float(b.get("y")) + float(b.get("height")), 2) for b in bins}
    assert len(bottoms) == 1


def test_histogram_bar_widths_follow_the_bin_edges():
    root = parse(charts.histogram([5, 5], [0.0, 1.0, 3.0], title="Uneven", x_label="x"))

    narrow, wide = (float(b.get("width")) + 1 for b in marks(root, "bin"))  # + the 2 x 0.5 gap
    assert wide == pytest.approx(2 * narrow, abs=0.02)


def test_histogram_table_and_axis_labels():
    chart = charts.histogram([2, 7], [300, 500, 700], title="Scores", x_label="credit score")
    root = parse(chart)

    assert chart.columns == ["credit score from", "to", "decisions"]
    assert chart.rows == [[300.0, 500.0, 2], [500.0, 700.0, 7]]
    assert {"300", "500", "700", "credit score", "decisions"} <= set(texts(root))
    assert "9 decisions in 2 bins" in svg_desc(root)


def test_histogram_counts_axis_uses_whole_numbers():
    root = parse(charts.histogram([1, 2], [0, 1, 2], title="Few", x_label="x"))

    assert {"0", "1", "2"} <= set(texts(root))
    assert "0.5" not in texts(root)


@pytest.mark.parametrize(
    ("counts", "edges"),
    [([1, 2], [0, 1]), ([1, 2], [0, 2, 1]), ([1], [0, float("nan")]), ([-1], [0, 1])],
)
def test_histogram_rejects_malformed_bins(counts, edges):
    with pytest.raises(ValueError):
        charts.histogram(counts, edges, title="Bad", x_label="x")


# --- time series -------------------------------------------------------------


def days(n: int) -> list[tuple[str, float]]:
    return [(f"2026-{1 + i // 28:02d}-{1 + i % 28:02d}", float(i % 7)) for i in range(n)]


def test_time_series_draws_one_bar_per_period():
    chart = charts.time_series(days(10), title="Daily", y_label="decisions")
    root = parse(chart)

    bars = marks(root, "period")
    assert [b.get("data-period") for b in bars if float(b.get("data-value"))] == [
        label for label, value in days(10) if value
    ]
    assert chart.rows == [[label, value] for label, value in days(10)]


def test_time_series_thins_period_labels_when_there_are_many():
    points = days(60)
    shown = [text for text in texts(parse(charts.time_series(points, title="T", y_label="n")))]
    labels = [label for label, _ in points]
    shown_labels = [text for text in shown if text in labels]

    assert 2 <= len(shown_labels) <= 14
    step = labels.index(shown_labels[1]) - labels.index(shown_labels[0])
    assert shown_labels == labels[::step]


def test_time_series_shows_every_label_when_there_are_few():
    points = days(5)
    shown = texts(parse(charts.time_series(points, title="T", y_label="n")))

    assert all(label in shown for label, _ in points)


def test_time_series_y_ticks_are_round():
    points = [("a", 37.0), ("b", 112.0)]
    shown = texts(parse(charts.time_series(points, title="T", y_label="n")))

    assert {"0", "50", "100", "150"} <= set(shown)


def test_time_series_says_when_a_period_has_no_value():
    chart = charts.time_series(
        [("d1", 3), ("d2", None), ("d3", float("nan"))], title="T", y_label="n"
    )
    root = parse(chart)

    assert len(marks(root, "period")) == 1
    assert texts(root).count("n/a") == 2
    assert chart.rows == [["d1", 3.0], ["d2", None], ["d3", None]]
    assert "d2, d3" in svg_desc(root)


def test_time_series_handles_negative_values_below_the_zero_line():
    root = parse(charts.time_series([("a", -2.0), ("b", 1.0)], title="T", y_label="change"))

    negative, positive = marks(root, "period")
    zero = float(negative.get("y"))
    assert float(positive.get("y")) + float(positive.get("height")) == pytest.approx(zero)
    assert float(negative.get("height")) == pytest.approx(
        2 * float(positive.get("height")), abs=0.02
    )


# --- strip plot --------------------------------------------------------------


def test_strip_plot_draws_a_dot_per_value_and_summarises_each_feature():
    series = [("age", [0.3, -0.1, 0.2, float("nan")]), ("income", [-0.5])]
    chart = charts.strip_plot(series, title="Spread", x_label="SHAP value")
    root = parse(chart)

    assert len(marks(root, "point")) == 4
    assert chart.columns == ["feature", "n", "min", "median", "max", "mean |value|"]
    assert chart.rows[0][:5] == ["age", 3, -0.1, 0.2, 0.3]
    assert chart.rows[0][5] == pytest.approx(0.2)
    assert chart.rows[1] == ["income", 1, -0.5, -0.5, -0.5, 0.5]
    assert "1 non-numeric values skipped" in svg_desc(root)


def test_strip_plot_subsamples_evenly_and_keeps_the_extremes():
    values = [i / 1000 for i in range(1000)]
    chart = charts.strip_plot([("f", values)], title="S", x_label="x", max_points=50)
    root = parse(chart)

    dots = marks(root, "point")
    assert len(dots) == 50
    xs = sorted(float(dot.get("cx")) for dot in dots)
    gaps = [b - a for a, b in itertools.pairwise(xs)]
    assert max(gaps) - min(gaps) < 1.0  # even, to within one skipped value (0.65 units)
    assert chart.rows[0][1:5] == [1000, 0.0, pytest.approx(0.4995), 0.999]
    assert "50 of 1000 values drawn" in svg_desc(root)


def test_strip_plot_jitter_is_deterministic_and_stays_in_its_row():
    values = [0.1] * 40
    root = parse(charts.strip_plot([("f", values)], title="S", x_label="x"))

    ys = [float(dot.get("cy")) for dot in marks(root, "point")]
    assert len(set(ys)) > 30  # spread out, not stacked on one line
    assert max(ys) - min(ys) <= charts.STRIP_ROW - 10


# --- nice ticks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 1, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0, 37, [0.0, 10.0, 20.0, 30.0, 40.0]),
        (-1.3, 2.7, [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]),
        (0.6, 1.2, [0.6, 0.8, 1.0, 1.2]),
        (5, 5, [4.0, 5.0, 6.0]),
        (0, 0, [-1.0, -0.5, 0.0, 0.5, 1.0]),
        (-0.004, -0.001, [-0.004, -0.003, -0.002, -0.001]),
    ],
)
def test_nice_ticks_examples(low, high, expected):
    assert nice_ticks(low, high) == expected


def test_nice_ticks_rejects_non_finite_bounds():
    with pytest.raises(ValueError):
        nice_ticks(0, float("nan"))


bounds = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(bounds, bounds, st.integers(min_value=2, max_value=10))
def test_nice_ticks_are_even_one_two_five_steps_covering_the_range(low, high, count):
    ticks = nice_ticks(low, high, count)
    step = ticks[1] - ticks[0]

    assert ticks[0] <= min(low, high) + 1e-9 * step
    assert ticks[-1] >= max(low, high) - 1e-9 * step
    assert all(b - a == pytest.approx(step, rel=1e-6) for a, b in itertools.pairwise(ticks))
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    assert any(mantissa == pytest.approx(m, rel=1e-6) for m in (1, 2, 5, 10))
    assert len(ticks) <= 2 * count + 2


# --- degenerate input --------------------------------------------------------


EMPTY = {
    "waterfall": lambda: charts.waterfall(0.0, [], 0.0, title="Empty"),
    "waterfall_nan_base": lambda: charts.waterfall(float("nan"), [("a", 1.0)], 1.0, title="Empty"),
    "bar_chart": lambda: charts.bar_chart([], title="Empty", value_label="w"),
    "bar_chart_all_nan": lambda: charts.bar_chart(
        [("a", float("nan"))], title="Empty", value_label="w"
    ),
    "histogram": lambda: charts.histogram([], [], title="Empty", x_label="x"),
    "time_series": lambda: charts.time_series([], title="Empty", y_label="n"),
    "strip_plot": lambda: charts.strip_plot([], title="Empty", x_label="x"),
    "strip_plot_no_values": lambda: charts.strip_plot([("a", [])], title="Empty", x_label="x"),
}


@pytest.mark.parametrize("render", EMPTY.values(), ids=EMPTY.keys())
def test_empty_input_gives_a_no_data_chart(render):
    chart = render()
    root = parse(chart)

    assert "No data" in svg_title(root)
    assert svg_desc(root).startswith("No data")
    assert "No data" in texts(root)
    assert chart.title == "Empty"
    assert chart.rows == []
    assert chart.columns
    assert "No data" in chart.table_html()


DEGENERATE = {
    "waterfall_all_zero": lambda: charts.waterfall(0.0, [("a", 0.0), ("b", 0.0)], 0.0, title="T"),
    "waterfall_single": lambda: charts.waterfall(-3.0, [("a", -2.0)], -5.0, title="T"),
    "waterfall_max_bars_zero": lambda: charts.waterfall(
        0.0, CONTRIBUTIONS, 0.7, title="T", max_bars=0
    ),
    "bar_all_zero": lambda: charts.bar_chart([("a", 0.0)], title="T", value_label="w"),
    "bar_negative_only": lambda: charts.bar_chart(
        [("a", -1.0), ("b", -3.0)], title="T", value_label="w"
    ),
    "bar_unsigned_zero": lambda: charts.bar_chart(
        [("a", 0)], title="T", value_label="w", signed=False
    ),
    "histogram_all_zero": lambda: charts.histogram([0, 0], [0, 1, 2], title="T", x_label="x"),
    "histogram_single": lambda: charts.histogram([7], [0.5, 0.6], title="T", x_label="x"),
    "series_single": lambda: charts.time_series([("2026-11-20", 4)], title="T", y_label="n"),
    "series_all_zero": lambda: charts.time_series([("a", 0), ("b", 0)], title="T", y_label="n"),
    "series_negative_only": lambda: charts.time_series([("a", -1.5)], title="T", y_label="n"),
    "strip_single": lambda: charts.strip_plot([("a", [0.0])], title="T", x_label="x"),
    "strip_negative_only": lambda: charts.strip_plot([("a", [-1.0, -2.0])], title="T", x_label="x"),
    "strip_inf": lambda: charts.strip_plot([("a", [float("inf"), 1.0])], title="T", x_label="x"),
    "strip_max_points_zero": lambda: charts.strip_plot(
        [("a", [1, 2, 3])], title="T", x_label="x", max_points=0
    ),
}


@pytest.mark.parametrize("render", DEGENERATE.values(), ids=DEGENERATE.keys())
def test_degenerate_input_renders_finite_geometry(render):
    chart = render()
    root = parse(chart)

    assert_geometry_is_finite(root)
    assert chart.rows
    assert svg_title(root) == "T"
    assert svg_desc(root)


def test_a_zero_contribution_has_no_sign():
    root = parse(charts.waterfall(0.0, [("a", 0.0)], 0.0, title="T"))

    assert "0.00" in texts(root)
    assert "+0.00" not in texts(root)


# --- properties --------------------------------------------------------------


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
features = st.lists(st.tuples(st.text(max_size=30), finite), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(base=finite, contributions=features, max_bars=st.integers(min_value=1, max_value=15))
def test_any_finite_waterfall_is_well_formed_and_adds_up(base, contributions, max_bars):
    output = base + math.fsum(value for _, value in contributions)
    chart = charts.waterfall(base, contributions, output, title="P", max_bars=max_bars)
    root = parse(chart)

    assert len(marks(root, "contribution")) == min(len(contributions), max_bars)
    assert_geometry_is_finite(root)
    assert len(chart.rows) == len(contributions) + 2
    assert chart.rows[-2][2] == pytest.approx(output, rel=1e-9, abs=1e-9)
    assert sorted(row[1] for row in chart.rows[1:-1]) == sorted(v for _, v in contributions)


@settings(max_examples=100, deadline=None)
@given(
    series=st.lists(
        st.tuples(st.text(max_size=20), st.lists(st.one_of(finite, st.just(float("nan"))))),
        max_size=6,
    )
)
def test_any_strip_plot_is_well_formed(series):
    chart = charts.strip_plot(series, title="P", x_label="x", max_points=20)
    root = parse(chart)

    assert_geometry_is_finite(root)
    drawn = sum(min(len([v for v in values if not math.isnan(v)]), 20) for _, values in series)
    assert len(marks(root, "point")) == drawn
