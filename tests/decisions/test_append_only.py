"""Decisions are records: the application can neither change nor remove one."""

from __future__ import annotations

import pytest

from auditapp.appendonly import AppendOnlyError
from auditapp.decisions.models import Decision


def test_a_decision_cannot_be_saved_again(decision):
    decision.prediction = "good" if decision.prediction == "bad" else "bad"

    with pytest.raises(AppendOnlyError, match="append-only"):
        decision.save()
    assert Decision.objects.get(pk=decision.pk).content_hash == decision.content_hash


def test_a_decision_cannot_be_deleted(decision):
    with pytest.raises(AppendOnlyError):
        decision.delete()
    assert Decision.objects.filter(pk=decision.pk).exists()


def test_decisions_cannot_be_updated_or_deleted_in_bulk(decision):
    with pytest.raises(AppendOnlyError):
        Decision.objects.filter(pk=decision.pk).update(score=0.0)
    with pytest.raises(AppendOnlyError):
        Decision.objects.all().delete()
    stored = Decision.objects.get(pk=decision.pk)
    assert stored.score == decision.score
    assert stored.compute_content_hash() == decision.content_hash
