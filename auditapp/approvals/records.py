"""Approvals in the sealed log: each request and each decision on one (insert-only)."""

from auditapp.accounts.records import RecordKind, register
from auditapp.approvals.models import Approval, ApprovalStep

APPROVAL = register(
    RecordKind(
        name="approval",
        label="Approval request",
        model=Approval,
        fields=(
            "kind",
            "registered_model_id",
            "model_version_id",
            "change",
            "summary",
            "requested_by_id",
            "requester_name",
            "requested_at",
            "expires_at",
        ),
        time_field="requested_at",
    )
)

APPROVAL_STEP = register(
    RecordKind(
        name="approval_step",
        label="Approval decision",
        model=ApprovalStep,
        fields=(
            "approval_id",
            "action",
            "decided_by_id",
            "decider_name",
            "comment",
            "result",
            "decided_at",
        ),
        time_field="decided_at",
    )
)
