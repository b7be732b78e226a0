"""Versions' parsed schemas, kept per process: a registered version's schema never changes."""

from __future__ import annotations

from functools import lru_cache

from auditapp.registry.models import ModelVersion
from explain.schema import Schema, parse_schema

SCHEMA_CACHE_SIZE = 512


@lru_cache(maxsize=SCHEMA_CACHE_SIZE)
def version_schema(version_id: int, schema_sha256: str) -> Schema:
    """The parsed schema of version `version_id`, whose stored schema_sha256 is the one given.

    Only a version's stage ever changes (ModelVersion.save), and a stage is not
    kept here, so a schema read once serves the process from then on: a search
    page names its versions' ids and hashes, and reads no version row. The hash
    is part of the key so that an id naming other content (a database restored
    or recreated, as tests do) is read again rather than answered from memory.
    """
    raw = ModelVersion.objects.filter(pk=version_id).values_list("schema", flat=True).get()
    return parse_schema(raw)
