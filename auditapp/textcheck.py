"""Checks of text and JSON that came from outside, before a database or a reader sees them.

PostgreSQL stores no NUL character, and UTF-8 has no lone surrogates (JSON's
"\\ud800" makes one): either would fail at the database, not as a 400 naming
the field. Identifiers (request_id, subject_ref, names) must also be free of
invisible or direction-changing characters (zero-width spaces, bidi overrides,
other control and format characters), which make two ids that look alike differ.
Walks are iterative: a value nested thousands deep is reported, never a RecursionError.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Collection, Iterable
from typing import Any

from auditapp.errors import InvalidInput

INT64 = 2**63
_SURROGATE = re.compile("[\ud800-\udfff]")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Control, format (zero-width, bidi, BOM), surrogate, line and paragraph separators.
_REFUSED_IN_IDENTIFIERS = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

Path = tuple[str | int, ...]


def _character(ch: str) -> str:
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, 'a control character')})"


class RepeatedKey(ValueError):
    """A JSON object gives one key twice (RFC 7493, I-JSON, forbids it): Python's json keeps
    the last value, other parsers the first, so the sender's record and ours could differ."""

    def __init__(self, key: str):
        super().__init__(f"the key {key!r} is given twice in one object")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook refusing a repeated key (RepeatedKey). Building the dict
    from the pairs and comparing lengths costs about 1 µs an object."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise RepeatedKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return obj


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """json.loads for text from outside: a key repeated in an object is a RepeatedKey (a
    ValueError, as any other invalid JSON)."""
    return json.loads(text, object_pairs_hook=unique_keys, **kwargs)


def refuse_repeated(
    values: Any, what: str, code: str, several: Collection[str] = frozenset()
) -> None:
    """400 naming every name given more than once in a query string or form (a Django
    QueryDict or MultiValueDict; anything without .lists() passes): none of them but
    `several` takes several values, and Django answers the last while the sender, or a
    reader of the URL, may mean the first. `what` names them in the message ("Query
    parameters")."""
    lists = getattr(values, "lists", None)
    counts = (
        {key: len(given) for key, given in lists() if len(given) > 1 and key not in several}
        if lists
        else {}
    )
    if counts:
        raise InvalidInput(
            f"{what} given more than once: {', '.join(sorted(counts))}; give each once.",
            code=code,
            details={
                key: [f"is given {n} times; give it once"] for key, n in sorted(counts.items())
            },
        )


def text_problem(value: str) -> str | None:
    """Why free text cannot be stored (NUL, a lone surrogate), or None."""
    if "\x00" in value:
        return "must not contain the NUL character U+0000"
    if not value.isascii() and (found := _SURROGATE.search(value)):
        return f"must not contain the lone surrogate U+{ord(found.group()):04X} (not UTF-8)"
    return None


def identifier_problem(value: str) -> str | None:
    """Why a string cannot be an identifier (control or invisible characters), or None."""
    if value.isascii():
        if found := _ASCII_CONTROL.search(value):
            return f"must not contain the control character {_character(found.group())}"
        return None
    for ch in value:
        if unicodedata.category(ch) in _REFUSED_IN_IDENTIFIERS:
            return f"must not contain the invisible or control character {_character(ch)}"
    return None


def format_path(path: Iterable[str | int]) -> str:
    """("decisions", 0, "metadata", "a") -> "decisions[0].metadata.a"; unprintables escaped."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            shown = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in part)
            text += f".{shown}" if text else shown
    return text


def json_problem(
    value: Any, *, max_depth: int, text: bool = True, ints: bool = True, floats: bool = True
) -> tuple[Path, str] | None:
    """The first (path, reason) that makes a parsed JSON value unstorable, or None.

    Always checks nesting (at most `max_depth` levels of objects and arrays);
    `text`: keys and strings (text_problem); `ints`: integers beyond 64 bits;
    `floats`: NaN and Infinity. With all three off only containers are visited.
    """
    stack: list[tuple[Any, Path, int]] = [(value, (), 0)]
    while stack:
        item, path, depth = stack.pop()
        kind = type(item)
        if kind is dict or kind is list:
            if depth >= max_depth:
                return path, f"is nested deeper than {max_depth} levels"
            pairs = item.items() if kind is dict else enumerate(item)
            children = []
            for key, child in pairs:
                if kind is dict and text and (reason := text_problem(key)):
                    return (*path, key), f"the key {reason}"
                if text or ints or floats or type(child) in (dict, list):
                    children.append((child, (*path, key), depth + 1))
            stack.extend(reversed(children))
        elif kind is str:
            if text and (reason := text_problem(item)):
                return path, reason
        elif kind is int:
            if ints and not -INT64 <= item < INT64:
                return path, "must be an integer within 64 bits (±9.2e18)"
        elif kind is float and floats and not math.isfinite(item):
            return path, f"must be a finite number, got {item}"
    return None


def nests_deeper(value: Any, max_depth: int) -> bool:
    """Whether objects and arrays nest more than `max_depth` levels (level by level: cheap)."""
    level, depth = ([value] if type(value) in (dict, list) else []), 0
    while level:
        depth += 1
        if depth > max_depth:
            return True
        level = [
            child
            for item in level
            for child in (item.values() if type(item) is dict else item)
            if type(child) is dict or type(child) is list
        ]
    return False


def count_keys(value: Any) -> int:
    """Keys of every object inside a JSON value (iterative)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            total += len(item)
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return total


def csv_header_problem(
    header: list[str], required: Iterable[str], known: Iterable[str] | None = None
) -> str | None:
    """Why a CSV cannot be read by its header, or None: a required column missing, one
    named twice (csv.DictReader keeps the last), or, given the `known` columns, one that
    is not read (a misspelt "metdata" would have its values dropped unsaid)."""
    if missing := [name for name in required if name not in header]:
        return f"lacks the column(s) {missing}"
    if repeated := sorted({name for name in header if header.count(name) > 1}):
        return f"repeats the column(s) {repeated}; name each once"
    known = list(known) if known is not None else None
    if known is not None and (unknown := [name for name in header if name not in known]):
        return f"has the column(s) {unknown}, which are not read; it takes {', '.join(known)}"
    return None


def ragged_row(row: dict, header: list[str]) -> str | None:
    """Why a csv.DictReader row cannot be read, or None. The reader puts surplus cells
    under None and leaves missing ones None: an unquoted comma in a value shifts every
    later cell a column on, so no value of the row is where the header says."""
    if None not in row and None not in row.values():
        return None
    cells = sum(value is not None for key, value in row.items() if key is not None)
    cells += len(row.get(None) or ())
    return f"has {cells} cells where the header has {len(header)}"
