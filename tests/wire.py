"""Round trips to PostgreSQL counted on the wire, in libpq's own trace of the protocol."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import connection


@contextmanager
def round_trips() -> Iterator[list[int]]:
    """Yields a list that holds, once the block ends, the number of times the client
    waited for the server: each turn from messages sent (F) to messages read (B) in the
    trace. A pipeline's statements are one wait, however many there are."""
    counted: list[int] = []
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield counted
        finally:
            pgconn.untrace()
        trace.seek(0)
        sides = [line[:1] for line in trace if line[:1] in ("F", "B")]
    counted.append(sum(1 for turn in itertools.pairwise(sides) if turn == ("F", "B")))
