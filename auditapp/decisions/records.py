"""Outcomes in the sealed log (decisions and audit events have leaves of their own)."""

from auditapp.accounts.records import RecordKind, register
from auditapp.decisions.models import Outcome

OUTCOME = register(
    RecordKind(
        name="outcome",
        label="Outcome",
        model=Outcome,
        fields=(
            "decision_id",
            "outcome",
            "observed_at",
            "recorded_at",
            "recorded_by_id",
            "source",
        ),
        time_field="recorded_at",
    )
)
