"""The API's JSON parser: DRF's, refusing what no endpoint can store, by path.

Kept apart from the views (DRF's settings import it while APIView is defined).
"""

from __future__ import annotations

import re

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json as drf_json

from auditapp.errors import InvalidInput
from auditapp.textcheck import (
    RepeatedKey,
    format_path,
    json_problem,
    loads,
    nests_deeper,
    refuse_repeated,
)

# Cheap scans of the raw body: only when one of these occurs is every string walked.
_NUL_OR_SURROGATE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_LONG_NUMBER = re.compile(rb"\d{19}")  # 2**63 has 19 digits


def _too_deep(limit: int) -> str:
    return f"is nested deeper than {limit} levels"


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing what no endpoint can store, by path.

    Nesting beyond ATTEST_MAX_JSON_DEPTH (json's own recursion stops near 1,000
    levels with a RecursionError, a 500 before this), NUL characters and lone
    surrogates in keys or strings, and integers beyond 64 bits. NaN and Infinity
    are still parsed, so that validation can name the field (STRICT_JSON). A key given
    twice in one object is refused (textcheck.unique_keys): parsers disagree on its value.
    """

    @property
    def _parse_constant(self):
        return drf_json.strict_constant if self.strict else None

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.ATTEST_MAX_JSON_DEPTH
        raw = stream.read() if stream is not None else b""
        encoding = parsers.get_encoding(parser_context or {})
        try:
            data = loads(raw.decode(encoding), parse_constant=self._parse_constant)
        except RecursionError:
            raise InvalidInput(
                f"The JSON body {_too_deep(limit)}.",
                code="invalid_json",
                details={"body": [_too_deep(limit)]},
            ) from None
        except RepeatedKey as exc:
            raise InvalidInput(
                f"The JSON body is invalid: {exc}; send each key once.",
                code="invalid_json",
                details={"body": [str(exc)]},
            ) from None
        except ValueError as exc:  # as DRF's parser says it (UnicodeDecodeError included)
            raise ParseError(f"JSON parse error - {exc}") from None
        utf8 = encoding.lower().replace("-", "") == "utf8"
        text = not utf8 or bool(_NUL_OR_SURROGATE_ESCAPE.search(raw))
        ints = not utf8 or bool(_LONG_NUMBER.search(raw))
        # The walk that names a path runs only when a cheap check found something.
        if (text or ints or nests_deeper(data, limit)) and (
            problem := json_problem(data, max_depth=limit, text=text, ints=ints, floats=False)
        ):
            path, reason = problem
            field = format_path(path) or "body"
            raise InvalidInput(
                f"The JSON body is invalid at {field}: {reason}.",
                code="invalid_json",
                details={field: [reason]},
            )
        return data


class FormParser(parsers.FormParser):
    """DRF's urlencoded parser, refusing a field given twice (textcheck.refuse_repeated)."""

    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        refuse_repeated(data, "Form fields", "invalid_body")
        return data


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser, refusing a field or file given twice (textcheck.refuse_repeated)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        refuse_repeated(parsed.data, "Form fields", "invalid_body")
        refuse_repeated(parsed.files, "Form fields", "invalid_body")
        return parsed
