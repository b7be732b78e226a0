"""Log filters the settings name (LOGGING)."""

from __future__ import annotations

import logging


class ExpectedRefusals(logging.Filter):
    """A 4xx answer keeps its one warning line but loses the traceback.

    A refused role or a missing object is an answer, not a fault (the access log
    records the refusal); a traceback for each one buried the log (`make run`).
    A 5xx keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if 400 <= getattr(record, "status_code", 500) < 500:
            record.exc_info = None
            record.exc_text = None
        return True
