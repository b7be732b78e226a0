"""Writes of human oversight: feedback on a decision."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.decisions.models import Decision
from auditapp.errors import InvalidInput
from auditapp.reviews.models import Feedback

FEEDBACK_FIELDS = {"verdict", "corrected_label", "explanation_rating", "comment"}
MAX_COMMENT = 5000


def _feedback_errors(data: Any, decision: Decision) -> dict[str, str]:
    if not isinstance(data, dict):
        return {"": "the body must be an object"}
    errors = {name: "is not a feedback field" for name in data if name not in FEEDBACK_FIELDS}
    verdicts = [v for v, _ in Feedback.VERDICTS]
    if data.get("verdict") not in verdicts:
        errors["verdict"] = f"must be one of {verdicts}"
    label = data.get("corrected_label")
    target = decision.model_version.parsed_schema.target
    if label is not None and (reason := target.label_error(label)):
        errors["corrected_label"] = reason
    rating = data.get("explanation_rating")
    if rating is not None and (
        not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5
    ):
        errors["explanation_rating"] = "must be a whole number from 1 to 5"
    comment = data.get("comment", "")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        errors["comment"] = f"must be text of at most {MAX_COMMENT} characters"
    return errors


@transaction.atomic
def submit_feedback(actor: roles.Actor, decision: Decision, data: Any, *, ip=None) -> Feedback:
    """Record a verdict on a decision and its explanation (a new row, never an edit)."""
    actor.require(roles.GIVE_FEEDBACK)
    errors = _feedback_errors(data, decision)
    if errors:
        raise InvalidInput("The feedback is invalid.", code="invalid_feedback", details=errors)
    feedback = Feedback.objects.create(
        decision=decision,
        author=actor.user,
        verdict=data["verdict"],
        corrected_label=data.get("corrected_label"),
        explanation_rating=data.get("explanation_rating"),
        comment=data.get("comment", "").strip(),
    )
    record_event(
        "feedback.submitted",
        actor=actor,
        target=decision,
        ip=ip,
        verdict=feedback.verdict,
        feedback_id=feedback.pk,
    )
    return feedback


def feedback_json(feedback: Feedback) -> dict:
    return {
        "id": feedback.pk,
        "verdict": feedback.verdict,
        "corrected_label": feedback.corrected_label,
        "explanation_rating": feedback.explanation_rating,
        "comment": feedback.comment,
        "author": feedback.author.get_username(),
        "created_at": feedback.created_at,
    }
