"""One rule for every CSV cell the site writes: no cell can start a spreadsheet formula.

OWASP (CSV injection): a cell starting with = + - @ tab or carriage return may
be run as a formula when the file is opened in a spreadsheet; prefixing it with
a single quote makes it text. Only strings are changed: numbers (a negative
score, say) stay numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """The value, with a quote before a string that a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(row: Iterable[Any]) -> list[Any]:
    return [safe_cell(value) for value in row]
