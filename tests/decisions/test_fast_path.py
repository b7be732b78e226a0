"""Verification's fast paths hash exactly what the models define.

Verification reads columns as text and hashes them in bulk (`rehashing.decision_hashes`,
`_event_hashes`) rather than through model instances; each document is defined
once (`hashing.decision_document`, `accounts.models.event_document`). These
tests hold the fast path to the model's own definition on awkward values: tiny
and huge floats, integers that are floats, non-ASCII text, nested metadata,
missing subject references, sensitive inputs, filters kept apart as sensitive.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from auditapp.decisions.rehashing import decision_hashes, event_hashes
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db

AWKWARD_FLOATS = st.one_of(
    st.floats(min_value=1e-12, max_value=1e-6),
    st.floats(min_value=1e6, max_value=1e12),
    st.integers(min_value=0, max_value=10**6).map(float),
    st.floats(min_value=0, max_value=10**6, allow_nan=False),
)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what JSON input may carry
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=20)


def fast_path() -> dict[int, tuple[bytes, str, str]]:
    return {
        pk: (recomputed, stored, at)
        for chunk in decision_hashes(processes=False)
        for pk, recomputed, stored, at in chunk
    }


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    income=AWKWARD_FLOATS,
    note=TEXT,
    nested=st.dictionaries(TEXT, st.one_of(INT64, AWKWARD_FLOATS, TEXT), max_size=3),
    subject=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9éß€-]{1,12}", fullmatch=True)),
)
def test_the_decision_fast_path_equals_the_models_definition(
    model_version, ingest, income, note, nested, subject
):
    item = DecisionPayloadFactory(subject_ref=subject, metadata={"note": note, "nested": nested})
    item["inputs"]["income"] = income  # a sensitive input: hashed as a salted commitment
    (result,) = ingest(item)
    decision = Decision.objects.get(pk=result["id"])

    recomputed, stored, at = fast_path()[decision.pk]

    assert recomputed.hex() == decision.compute_content_hash() == decision.content_hash == stored
    assert at == decision.recorded_at.isoformat(timespec="microseconds")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    details=st.dictionaries(TEXT, st.one_of(INT64, AWKWARD_FLOATS, TEXT), max_size=4),
    hidden=st.one_of(st.none(), st.dictionaries(TEXT, AWKWARD_FLOATS, min_size=1, max_size=2)),
    ip=st.one_of(st.none(), st.ip_addresses().map(str)),
)
def test_the_event_fast_path_equals_the_models_definition(db, details, hidden, ip):
    event = record_event("test.fast_path", ip=ip, sensitive_details=hidden, **{"d": details})

    hashes = {pk: (h, stored) for chunk in event_hashes() for pk, h, stored, _ in chunk}

    event = AuditEvent.objects.get(pk=event.pk)  # as stored: the IP in its canonical form
    assert hashes[event.pk][0].hex() == event.compute_content_hash() == event.content_hash
