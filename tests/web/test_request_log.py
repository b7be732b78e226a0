"""An expected refusal (403, 404) is one warning line in the log, not a traceback."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_a_refused_page_logs_one_line_without_a_traceback(domain_expert, caplog):
    client = Client()
    client.force_login(domain_expert)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert client.get("/audit/").status_code == 403  # a domain expert may not read it
        assert client.get("/decisions/999999/").status_code == 404
    records = [r for r in caplog.records if r.name == "django.request"]
    assert [r.getMessage() for r in records] == [
        "Forbidden (Permission denied): /audit/",
        "Not Found: /decisions/999999/",
    ]
    assert all(r.exc_info is None for r in records)
    assert "Traceback" not in caplog.text
