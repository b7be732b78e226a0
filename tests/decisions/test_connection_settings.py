"""How Attest's PostgreSQL connections are set up."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.conftest import embedded_default

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(embedded_default(), reason="PostgreSQL's settings"),
]


def test_queries_are_not_compiled():
    """PostgreSQL's JIT compiled the search page's count (a LIMIT 10,001 the planner
    costed as a scan): 66 ms of compiling for 18 ms of work at 2M decisions."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone()[0] == "off"
