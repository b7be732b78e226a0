"""How Attest prints dates and numbers for people: "21 Nov 2026", "21 Nov 2026, 14:05 UTC",
"21-27 Nov 2026" (an en dash), "0.05 %", "0.262", "1,204". One module for the PDF, the
audit log's sentences and the tests that read them back, so a date or figure reads the
same wherever it appears; the JSON and CSV exports keep the exact values.

Every function takes None and prints "—" for it.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

DASH = "—"
EN_DASH = "\u2013"
MINUS = "\u2212"
TIMES = "\u00d7"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Figure keys of the document as the PDF names them (a key not here: its words).
FIGURE_LABELS = {
    "with_outcome": "decisions with an outcome",
    "outcomes": "decisions with an outcome",
    "positive_class": "positive class",
    "positive_rate": "share of the positive class",
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1 score",
    "roc_auc": "ROC AUC",
    "auc": "ROC AUC",
    "brier": "Brier score",
    "mae": "mean absolute error",
    "rmse": "root mean squared error",
    "r2": "R²",
    "roc_auc_drop": "ROC AUC drop against the reference",
}


# --- numbers ------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def count(value: Any) -> str:
    """An integer with thousands separators: 1,204."""
    if value is None:
        return DASH
    return f"{int(value):,}"


def number(value: Any) -> str:
    """Any figure: integers whole, floats to 4 significant digits, never an exponent
    above 0.0001 (below it: "1.2 x 10" and a superscript -7, with a times sign);
    booleans as yes / no; text as it is."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return count(value)
    if not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return DASH
    size = abs(value)
    if size == 0:
        return "0"
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 1e-4:
        return _minus(f"{value:.4g}")
    mantissa, exponent = f"{value:.1e}".split("e")
    return _minus(f"{mantissa} {TIMES} 10{_superscript(int(exponent))}")


def decimal(value: Any, places: int = 3, *, whole: bool = True) -> str:
    """A fixed number of decimals (rates, PSI, ratios): 0.262; exactly 0 or 1 stays 0 or 1
    (unless not `whole`); a positive value too small to show is "< 0.001"."""
    number_ = _finite(value)
    if number_ is None:
        return DASH
    if whole and number_ in (0.0, 1.0):
        return str(int(number_))
    smallest = 10.0**-places
    if 0 < abs(number_) < smallest:
        return f"{'> ' + MINUS if number_ < 0 else '< '}{smallest:.{places}f}"
    return _minus(f"{number_:.{places}f}")


def p_value(value: Any) -> str:
    """A test's p-value: 0.043, or "< 0.001"."""
    return decimal(value, 3)


def percent(value: Any) -> str:
    """A share as a percentage: 45.3 %, 5.0 %, 0.05 %, "< 0.01 %" (never 5.00e-04)."""
    number_ = _finite(value)
    if number_ is None:
        return DASH
    points = 100 * number_
    size = abs(points)
    if size == 0:
        text = "0"
    elif size >= 1:
        text = f"{points:.1f}"
    elif size >= 0.01:
        text = f"{points:.2f}"
    else:
        text = "< 0.01" if points > 0 else f"> {MINUS}0.01"
    return f"{_minus(text)} %"


def signed_percent(value: Any) -> str:
    """A relative change: +12.5 %, or with a minus sign."""
    number_ = _finite(value)
    if number_ is None:
        return DASH
    text = percent(number_)
    return text if number_ < 0 or text.startswith("0 ") else f"+{text}"


def milliseconds(value: Any) -> str:
    number_ = _finite(value)
    if number_ is None:
        return DASH
    return f"{number_:,.0f} ms" if number_ >= 10 else f"{number_:.1f} ms"


def hours(value: Any) -> str:
    """A duration given in hours, as people say it: 45 min, 5.2 h, 3.1 days."""
    number_ = _finite(value)
    if number_ is None:
        return DASH
    if number_ < 1:
        return f"{number_ * 60:.0f} min"
    if number_ < 48:
        return f"{number_:.1f} h"
    return f"{number_ / 24:.1f} days"


def _minus(text: str) -> str:
    return text.replace("-", MINUS)


def _superscript(exponent: int) -> str:
    return str(exponent).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


def figure_label(key: Any) -> str:
    """A document key as words: with_outcome -> "decisions with an outcome"."""
    text = str(key)
    return FIGURE_LABELS.get(text, text.replace("_", " "))


# --- dates --------------------------------------------------------------------------------


def as_moment(value: Any) -> datetime | None:
    """A datetime (UTC) from a datetime or an ISO-8601 string; a date is its midnight."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def day(value: Any) -> str:
    """21 Nov 2026."""
    moment = as_moment(value)
    if moment is None:
        return DASH if value in (None, "") else str(value)
    return f"{moment.day} {MONTHS[moment.month - 1]} {moment.year}"


def moment(value: Any) -> str:
    """21 Nov 2026, 10:03 UTC (no seconds: a reader needs the minute)."""
    when = as_moment(value)
    if when is None:
        return DASH if value in (None, "") else str(value)
    return f"{day(when)}, {when:%H:%M} UTC"


def _midnight(when: datetime) -> bool:
    return when == when.replace(hour=0, minute=0, second=0, microsecond=0)


def span(start: Any, end: Any) -> str:
    """A half-open period [start, end) as people read it: the days it covers, both
    included ("21-27 Nov 2026", "28 Nov - 4 Dec 2026", "21 Nov 2026", en dashes) when it
    begins and ends at midnight; else its two moments ("21 Nov 2026, 10:00 - 22 Nov 2026,
    09:00 UTC")."""
    low, high = as_moment(start), as_moment(end)
    if low is None or high is None:
        return DASH
    if not (_midnight(low) and _midnight(high)) or high <= low:
        return f"{moment(low).removesuffix(' UTC')} {EN_DASH} {moment(high)}"
    last = high - timedelta(days=1)
    if last == low:
        return day(low)
    if (low.year, low.month) == (last.year, last.month):
        return f"{low.day}{EN_DASH}{day(last)}"
    if low.year == last.year:
        return f"{low.day} {MONTHS[low.month - 1]} {EN_DASH} {day(last)}"
    return f"{day(low)} {EN_DASH} {day(last)}"


def period_label(start: Any, end: Any) -> str:
    """A report's period on the reports page, worded as its form asks for it: whole UTC
    days "1-30 Nov 2026 (UTC days, both included)", else its two moments."""
    low, high = as_moment(start), as_moment(end)
    if low is not None and high is not None and _midnight(low) and _midnight(high):
        return f"{span(low, high)} (UTC days, both included)"
    return span(start, end)


def short_span(start: Any, end: Any) -> str:
    """A window's label on a chart's axis, without the year: "21 Nov", "16-22 Nov"."""
    low, high = as_moment(start), as_moment(end)
    if low is None or high is None:
        return DASH
    last = high - timedelta(microseconds=1)
    first_day = f"{low.day} {MONTHS[low.month - 1]}"
    if low.date() == last.date():
        return first_day
    if low.month == last.month:
        return f"{low.day}{EN_DASH}{last.day} {MONTHS[last.month - 1]}"
    return f"{first_day}{EN_DASH}{last.day} {MONTHS[last.month - 1]}"
