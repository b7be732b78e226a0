"""Outcomes and retirement declarations in the sealed log (decisions and audit events have
leaves of their own)."""

from auditapp.accounts.records import RecordKind, register
from auditapp.decisions.models import Erasure, LegalHold, Outcome, Retirement

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

# A declaration is recorded and sealed in the transaction that writes it, before any row
# it names is deleted: it cannot be widened or withdrawn unseen.
RETIREMENT = register(
    RecordKind(
        name="retirement",
        label="Retirement declaration",
        model=Retirement,
        fields=("month", "declared_at", "declared_by_id", "actor_name", "mode", "tables"),
        # (no time checked: declared_at is its transaction's start, which the triggers
        # match, and measuring a large month comes before the record is written)
    )
)

ERASURE = register(
    RecordKind(
        name="erasure",
        label="Erasure declaration",
        model=Erasure,
        fields=(
            "cause",
            "reason",
            "subject_ref",
            "declared_at",
            "declared_by_id",
            "actor_name",
            "decisions",
            "scope",
        ),
    )
)

LEGAL_HOLD = register(
    RecordKind(
        name="legal_hold",
        label="Legal hold",
        model=LegalHold,
        fields=(
            "registered_model_id",
            "starts",
            "ends",
            "subject_ref",
            "reason",
            "created_by_id",
            "created_at",
            "released_by_id",
            "released_at",
            "release_reason",
        ),
        time_field="created_at",
        stateful=True,  # released later: recorded again
    )
)
