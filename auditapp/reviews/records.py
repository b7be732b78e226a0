"""Human oversight in the sealed log: feedback, review cases, their events and overrides.

A case changes state (open, in review, resolved): its whole row is recorded
again with every change, beside the insert-only event that says who changed it.
"""

from auditapp.accounts.records import RecordKind, register
from auditapp.reviews.models import CaseEvent, Feedback, Override, ReviewCase

FEEDBACK = register(
    RecordKind(
        name="feedback",
        label="Feedback",
        plural="feedback",
        model=Feedback,
        fields=(
            "decision_id",
            "author_id",
            "verdict",
            "corrected_label",
            "explanation_rating",
            "comment",
            "created_at",
        ),
        time_field="created_at",
    )
)

REVIEW_CASE = register(
    RecordKind(
        name="review_case",
        label="Review case",
        model=ReviewCase,
        fields=(
            "decision_id",
            "state",
            "reasons",
            "assignee_id",
            "opened_at",
            "updated_at",
            "resolved_at",
            "resolution",
        ),
        time_field="opened_at",
        stateful=True,
    )
)

CASE_EVENT = register(
    RecordKind(
        name="case_event",
        label="Review case event",
        model=CaseEvent,
        fields=("case_id", "actor_id", "action", "details", "at"),
        time_field="at",
    )
)

OVERRIDE = register(
    RecordKind(
        name="override",
        label="Override",
        model=Override,
        fields=("decision_id", "case_id", "outcome", "rationale", "author_id", "created_at"),
        time_field="created_at",
    )
)
