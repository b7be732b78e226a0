"""Four-eyes: asking for a gated change, and approving or rejecting another's request.

A service whose change is gated (`gated`) calls `request_approval` instead of making
it; the change is made by its kind's `apply` (changes.py) when a second person who may
make it (or a role with approve_changes) approves, in the approving transaction, after
re-checking that it still fits. The requester never decides their own request, even as
admin (403 "own_request"). Each request and decision is audited and recorded in the
sealed log. A request not decided within ATTEST_APPROVAL_TTL_DAYS has expired.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from auditapp.accounts import records, roles
from auditapp.accounts.audit import record_event
from auditapp.approvals import changes
from auditapp.approvals.models import (
    APPROVED,
    EXPIRED,
    PENDING,
    REJECTED,
    STATES,
    Approval,
    ApprovalStep,
)
from auditapp.approvals.records import APPROVAL, APPROVAL_STEP
from auditapp.errors import Conflict, Forbidden, InvalidInput, NotFound
from auditapp.textcheck import text_problem

MAX_COMMENT = 2000


def gated(actor: roles.Actor, registered_model: Any) -> bool:
    """Whether the actor's change of a production-touching setting of this model waits for
    a second person: four-eyes is on for the model, and the actor is a person (the
    operator at the command line, with the database in hand, is not asked)."""
    return bool(registered_model.four_eyes) and not actor.system


@transaction.atomic
def request_approval(
    actor: roles.Actor,
    kind_name: str,
    *,
    registered_model: Any,
    change: dict[str, Any],
    summary: str,
    model_version: Any = None,
    ip: str | None = None,
) -> Approval:
    """Record a request for a gated change (audited, sealed); nothing is changed yet."""
    kind = changes.kind(kind_name)
    actor.require(kind.capability)
    now = timezone.now()
    approval = Approval.objects.create(
        kind=kind.name,
        registered_model=registered_model,
        model_version=model_version,
        change=change,
        summary=summary[:300],
        requested_by=actor.user,
        requester_name=actor.label[:200],
        requested_at=now,
        expires_at=now + timedelta(days=settings.ATTEST_APPROVAL_TTL_DAYS),
    )
    records.append(APPROVAL.name, [approval.pk])
    record_event(
        "approval.requested",
        actor=actor,
        target=approval,
        ip=ip,
        kind=kind.name,
        summary=approval.summary,
        change=change,
        expires_at=approval.expires_at.isoformat(),
    )
    approval.state = PENDING
    return approval


def approvals_for_actor(actor: roles.Actor, state: str | None = None):
    """The approvals of the models the actor sees, newest first, with their state."""
    actor.require(roles.READ_MODELS)
    if state is not None and state not in STATES:
        raise InvalidInput(
            f"state must be one of {list(STATES)}.", details={"state": [f"one of {list(STATES)}"]}
        )
    rows = (
        Approval.objects.visible_to(actor)
        .with_state()
        .select_related("registered_model", "model_version", "requested_by", "step__decided_by")
    )
    return rows.filter(state=state) if state else rows


def get_approval_for_actor(actor: roles.Actor, approval_id: int) -> Approval:
    """One approval, if the actor may see its model (else 404, as a missing one)."""
    approval = approvals_for_actor(actor).filter(pk=approval_id).first()
    if approval is None:
        raise NotFound(f"No approval {approval_id}.")
    return approval


def may_decide(actor: roles.Actor, approval: Approval) -> bool:
    """Whether the actor may approve or reject it: not its requester, and may make the
    change (or has approve_changes)."""
    if not actor.user.is_authenticated or actor.user.pk == approval.requested_by_id:
        return False
    capability = changes.kind(approval.kind).capability
    return actor.can(capability) or actor.can(roles.APPROVE_CHANGES)


def _decidable(actor: roles.Actor, approval_id: int) -> Approval:
    """The approval, locked, if the actor may decide it and it waits for a decision."""
    approval = get_approval_for_actor(actor, approval_id)
    if actor.user.is_authenticated and actor.user.pk == approval.requested_by_id:
        raise Forbidden(
            "You requested this change: another person must approve or reject it.",
            code="own_request",
        )
    if not may_decide(actor, approval):
        capability = changes.kind(approval.kind).capability
        raise PermissionDenied(
            f"Your role does not allow this ({capability} or {roles.APPROVE_CHANGES})."
        )
    # Two approvers at once: the second waits here, then finds the decision made.
    Approval.objects.select_for_update().filter(pk=approval.pk).first()
    approval = Approval.objects.with_state().select_related("step").get(pk=approval.pk)
    if approval.state == EXPIRED:
        raise Conflict(
            f"Approval {approval.pk} expired at {approval.expires_at:%Y-%m-%d %H:%M} UTC; "
            "ask for the change again.",
            code="approval_expired",
        )
    if approval.state != PENDING:
        raise Conflict(
            f"Approval {approval.pk} was already {approval.state}.", code="approval_decided"
        )
    return approval


def _comment(comment: Any, *, required: bool) -> str:
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise InvalidInput("comment must be text.", details={"comment": ["must be text"]})
    comment = comment.strip()
    if required and not comment:
        raise InvalidInput(
            "A rejection needs a comment saying why.",
            code="comment_required",
            details={"comment": ["required"]},
        )
    problem = text_problem(comment) or (
        f"must be at most {MAX_COMMENT} characters" if len(comment) > MAX_COMMENT else None
    )
    if problem:
        raise InvalidInput(f"comment {problem}.", details={"comment": [problem]})
    return comment


def _decide(actor, approval, action, comment, result, ip, *, event: str) -> Approval:
    step = ApprovalStep.objects.create(
        approval=approval,
        action=action,
        decided_by=actor.user,
        decider_name=actor.label[:200],
        comment=comment,
        result=result,
        decided_at=timezone.now(),
    )
    records.append(APPROVAL_STEP.name, [step.pk])
    record_event(
        event,
        actor=actor,
        target=approval,
        ip=ip,
        kind=approval.kind,
        summary=approval.summary,
        requested_by=approval.requester_name,
        comment=comment,
        result=result,
    )
    approval.state = action
    approval.step = step
    return approval


@transaction.atomic
def approve(actor: roles.Actor, approval_id: int, comment: Any = "", *, ip=None) -> Approval:
    """Approve another person's request and apply its change, in one transaction: if the
    change no longer fits (Conflict "approval_stale"), nothing is written."""
    comment = _comment(comment, required=False)
    approval = _decidable(actor, approval_id)
    lost = Conflict(
        f"{approval.requester_name} may no longer make this change; nothing was changed.",
        code="requester_not_allowed",
    )
    # The change is made as the requester's: one who no longer sees the model (taken off
    # it) may no longer make it, as one whose role changed may not (PermissionDenied).
    requester = roles.Actor(user=approval.requested_by)
    if not Approval.objects.visible_to(requester).filter(pk=approval.pk).exists():
        raise lost
    try:
        result = changes.kind(approval.kind).apply(approval, actor, ip)
    except PermissionDenied:
        raise lost from None
    return _decide(actor, approval, APPROVED, comment, result, ip, event="approval.approved")


@transaction.atomic
def reject(actor: roles.Actor, approval_id: int, comment: Any, *, ip=None) -> Approval:
    """Reject another person's request, saying why; nothing is changed."""
    comment = _comment(comment, required=True)
    approval = _decidable(actor, approval_id)
    return _decide(actor, approval, REJECTED, comment, {}, ip, event="approval.rejected")


def stage_history(model_version: Any) -> list:
    """A version's stage changes, oldest first, each with `.approval`: the approved request
    that made it (who asked, who approved), or None for a change made without one."""
    approvals = (
        Approval.objects.filter(model_version=model_version).with_state().select_related("step")
    )
    approving = approved_changes(approvals, "stage_change")
    history = list(model_version.stage_changes.select_related("changed_by"))
    for change in history:
        change.approval = approving.get(change.pk)
    return history


def approved_changes(approvals, key: str) -> dict[Any, Approval]:
    """{what it wrote under `key`: approval} of the approved ones among `approvals`, so that
    a page shows beside a stage change (key "stage_change") who asked and who approved."""
    found = {}
    for approval in approvals:
        step = getattr(approval, "step", None)
        if step is not None and step.action == APPROVED and key in step.result:
            found[step.result[key]] = approval
    return found


def approval_json(approval: Approval) -> dict[str, Any]:
    step = getattr(approval, "step", None) if approval.state not in (PENDING, EXPIRED) else None
    return {
        "id": approval.pk,
        "kind": approval.kind,
        "state": approval.state,
        "model": approval.registered_model.name,
        "version": approval.model_version.version if approval.model_version_id else None,
        "summary": approval.summary,
        "change": approval.change,
        "requested_by": approval.requester_name,
        "requested_at": approval.requested_at,
        "expires_at": approval.expires_at,
        "decided_by": step.decider_name if step else None,
        "decided_at": step.decided_at if step else None,
        "comment": step.comment if step else None,
        "result": step.result if step else None,
    }
