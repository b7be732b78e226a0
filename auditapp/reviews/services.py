"""Writes of human oversight: feedback on a decision."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, QuerySet, Value
from django.db.models.functions import Abs
from django.utils import timezone

from auditapp.accounts import records, roles
from auditapp.accounts.audit import record_event
from auditapp.decisions.models import Decision
from auditapp.errors import Conflict, InvalidInput
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.reviews import rules
from auditapp.reviews.models import CaseEvent, Feedback, Override, ReviewCase
from auditapp.reviews.records import CASE_EVENT, FEEDBACK, OVERRIDE, REVIEW_CASE
from auditapp.textcheck import text_problem

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
    elif reason := text_problem(comment):
        errors["comment"] = reason
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
    records.append(FEEDBACK.name, [feedback.pk])
    if feedback.verdict == Feedback.DISAGREE:
        detail = f"{actor.user.get_username()}: {feedback.comment[:200]}".rstrip(": ")
        open_cases({decision.pk: [rules.reason(rules.EXPERT_DISAGREES, detail)]}, actor=actor)
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


# -- the review queue ------------------------------------------------------------------------


def _reason_key(reason: dict) -> tuple[str, str]:
    """What makes a reason new to a case: a rule the workers apply counts once (applied
    again, it says the same); a person's reason (a flag's note, an expert's disagreement)
    counts by its words, so a second person's is kept, not dropped as a repeat."""
    return reason["rule"], reason.get("detail", "") if reason["rule"] in rules.PERSONAL else ""


def open_cases(reasons_by_decision: dict[int, list[dict]], *, actor=None) -> list[ReviewCase]:
    """Put decisions in the queue (or add reasons to their unresolved case). Idempotent."""
    reasons_by_decision = {d: r for d, r in reasons_by_decision.items() if r}
    if not reasons_by_decision:
        return []
    user = actor.user if actor is not None and actor.user.is_authenticated else None
    now = timezone.now()
    touched: list[ReviewCase] = []
    new_events: list[int] = []
    with transaction.atomic():
        if connection.vendor == "postgresql":
            opened, opened_events = _open_new_cases_postgresql(reasons_by_decision, user, now)
            touched.extend(opened)
            new_events.extend(opened_events)
            opened_for = {case.decision_id for case in opened}
            reasons_by_decision = {
                d: r for d, r in reasons_by_decision.items() if d not in opened_for
            }
        existing = {
            case.decision_id: case
            for case in ReviewCase.objects.select_for_update()
            .unresolved()
            .filter(decision_id__in=reasons_by_decision)
        }
        # New cases in two statements, not two per case (the explanation workers
        # open them for a whole batch at once).
        opened = ReviewCase.objects.bulk_create(
            [
                ReviewCase(
                    decision_id=decision_id, reasons=reasons, severity=rules.severity(reasons)
                )
                for decision_id, reasons in reasons_by_decision.items()
                if decision_id not in existing
            ]
        )
        events = CaseEvent.objects.bulk_create(
            [
                CaseEvent(
                    case=case,
                    actor=user,
                    action="opened",
                    details={"reasons": case.reasons},
                    at=now,
                )
                for case in opened
            ]
        )
        new_events.extend(event.pk for event in events)
        touched.extend(opened)
        for decision_id, reasons in reasons_by_decision.items():
            case = existing.get(decision_id)
            if case is None:
                continue
            new = [
                r for r in reasons if _reason_key(r) not in {_reason_key(x) for x in case.reasons}
            ]
            if new:
                case.set_reasons([*case.reasons, *new])
                case.updated_at = now
                case.save(update_fields=["reasons", "severity", "updated_at"])
                event = CaseEvent.objects.create(
                    case=case, actor=user, action="reasons_added", details={"reasons": new}, at=now
                )
                new_events.append(event.pk)
                touched.append(case)
        records.append(REVIEW_CASE.name, [case.pk for case in touched])
        records.append(CASE_EVENT.name, new_events)
    return touched


# Opens a case for every decision without an unresolved one, with its "opened"
# event, in one statement; decisions that have one are left to the ORM path above
# (which merges reasons). ON CONFLICT waits for a concurrent opener to commit.
OPEN_CASES_SQL = """
WITH wanted AS (
    SELECT * FROM jsonb_to_recordset(%(cases)s::jsonb)
        AS w(decision_id bigint, reasons jsonb, severity smallint)
), opened AS (
    INSERT INTO {cases} (decision_id, state, reasons, severity, opened_at, updated_at, resolution)
    SELECT decision_id, %(state)s, reasons, severity, %(now)s, %(now)s, '' FROM wanted
    ORDER BY decision_id
    ON CONFLICT (decision_id) WHERE state <> %(resolved)s DO NOTHING
    RETURNING id, decision_id, reasons
), events AS (
    INSERT INTO {events} (case_id, actor_id, action, details, at)
    SELECT id, %(actor)s, 'opened', jsonb_build_object('reasons', reasons), %(now)s FROM opened
    RETURNING id, case_id
)
SELECT opened.id, opened.decision_id, events.id
FROM opened JOIN events ON events.case_id = opened.id
"""


def _open_new_cases_postgresql(
    reasons_by_decision, user, now
) -> tuple[list[ReviewCase], list[int]]:
    """The common case of a worker's batch, without building model instances to insert.

    (Django's two bulk_create calls cost more than TreeSHAP on the batch's few cases.)
    """
    sql = OPEN_CASES_SQL.format(cases=ReviewCase._meta.db_table, events=CaseEvent._meta.db_table)
    wanted = [
        {"decision_id": d, "reasons": r, "severity": rules.severity(r)}
        for d, r in reasons_by_decision.items()
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "cases": orjson.dumps(wanted).decode(),
                "state": ReviewCase.OPEN,
                "resolved": ReviewCase.RESOLVED,
                "now": now,
                "actor": user.pk if user is not None else None,
            },
        )
        rows = cursor.fetchall()
    opened = []
    for pk, decision_id, _ in rows:
        case = ReviewCase(
            pk=pk,
            decision_id=decision_id,
            reasons=reasons_by_decision[decision_id],
            severity=rules.severity(reasons_by_decision[decision_id]),
            opened_at=now,
            updated_at=now,
        )
        case._state.adding = False
        opened.append(case)
    return opened, [event_id for _, _, event_id in rows]


def on_explanations_stored(
    sender, explanations, explain_settings=None, model_version=None, **kwargs
) -> None:
    """Receiver of decisions.signals.explanations_stored (connected in apps.py)."""
    review_explanations(explanations, explain_settings, model_version)


def review_explanations(
    explanations, explain_settings: dict | None = None, model_version: ModelVersion | None = None
) -> list[ReviewCase]:
    """Apply the queue's rules to freshly written explanations (called by the workers).

    The explanations are of one model version (a worker's batch), `model_version`;
    `explain_settings` is that version's, which holds its agreement thresholds.
    """
    agreement = rules.agreement_settings(explain_settings)
    reasons: dict[int, list[dict]] = {}
    for explanation in explanations:
        found = rules.explanation_reasons(explanation, agreement)
        if explanation.method == "shap":
            found += rules.score_reasons(explanation.decision.score)
        if found:
            reasons.setdefault(explanation.decision_id, []).extend(found)
    for decision_id, found in _protected_reasons(explanations, model_version).items():
        reasons.setdefault(decision_id, []).extend(found)
    return open_cases(reasons)


def _protected_reasons(explanations, model_version: ModelVersion | None) -> dict[int, list[dict]]:
    """rules.protected_reasons for the SHAP results this batch computed (those with an
    `outcome`; a partner re-judged for agreement was reviewed when it was stored).

    The batch's claimed decisions carry their predictions, and the batch is of
    `model_version`: no query.
    """
    fresh = [
        e
        for e in explanations
        if e.method == "shap" and e.status == "done" and getattr(e, "outcome", None) is not None
    ]
    if not fresh:
        return {}
    if model_version is None:
        raise ValueError("fresh SHAP results are reviewed with the model version they are of")
    schema = model_version.parsed_schema
    found = {}
    for explanation in fresh:
        hits = rules.protected_reasons(
            schema, explanation.decision.prediction, explanation.attributions
        )
        if hits:
            found[explanation.decision_id] = hits
    return found


MAX_FLAG_NOTE = 500  # characters of the note that says why a decision was flagged


def flag_decision(actor: roles.Actor, decision: Decision, note: str, *, ip=None) -> ReviewCase:
    actor.require(roles.WORK_REVIEWS)
    if not isinstance(note, str) or not note.strip():
        raise InvalidInput("Say why the decision needs a review.", code="invalid_flag")
    if reason := text_problem(note):
        raise InvalidInput(f"The note {reason}.", code="invalid_flag", details={"note": [reason]})
    note = note.strip()
    if len(note) > MAX_FLAG_NOTE:  # kept whole in the case's reasons, or refused: never cut
        raise InvalidInput.named(
            "note",
            f"must be at most {MAX_FLAG_NOTE} characters, not {len(note)}",
            code="invalid_flag",
        )
    (case,) = open_cases({decision.pk: [rules.reason(rules.FLAGGED, note)]}, actor=actor) or [
        ReviewCase.objects.unresolved().get(decision=decision)
    ]
    record_event("review.flagged", actor=actor, target=decision, ip=ip, case=case.pk)
    return case


def _transition(actor, case: ReviewCase, action: str, ip, changed: list[str], **details) -> None:
    """Save a case's change with the event saying who made it; both join the log."""
    case.updated_at = timezone.now()
    event = CaseEvent.objects.create(
        case=case, actor=actor.user, action=action, details=details, at=case.updated_at
    )
    case.save(update_fields=[*changed, "updated_at"])
    records.append(CASE_EVENT.name, [event.pk])
    records.append(REVIEW_CASE.name, [case.pk])
    record_event(
        f"review.{action}", actor=actor, target=case, ip=ip, decision=case.decision_id, **details
    )


# -- the queue page ----------------------------------------------------------------------------

QUEUE_SHOW = {"open": [ReviewCase.OPEN, ReviewCase.IN_REVIEW], "resolved": [ReviewCase.RESOLVED]}
QUEUE_WHO = ("mine", "unassigned")
# The queue's query parameters (queue_cases): what it shows, whose, of which model, in what order.
QUEUE_FILTERS = ("show", "who", "model", "order")
# ?order=: priority (the default) is the most severe rule first, then the score
# closest to the threshold (the model was least sure), then the oldest case.
QUEUE_ORDERS = {
    "priority": (
        F("severity").desc(),
        F("distance").asc(nulls_last=True),
        F("opened_at").asc(),
        F("id").asc(),
    ),
    "oldest": (F("opened_at").asc(), F("id").asc()),
    "newest": (F("opened_at").desc(), F("id").desc()),
    "score_high": (F("decision__score").desc(nulls_last=True), F("id").asc()),
    "score_low": (F("decision__score").asc(nulls_last=True), F("id").asc()),
}
QUEUE_ORDER_LABELS = {
    "priority": "priority",
    "oldest": "oldest first",
    "newest": "newest first",
    "score_high": "highest score first",
    "score_low": "lowest score first",
}


def queue_cases(actor: roles.Actor, params) -> QuerySet:
    """The cases the actor may see, filtered and ordered by the queue page's parameters.

    ?show= open (open and in review, the default) | resolved | all; ?who= mine |
    unassigned; ?model= a model's name; ?order= one of QUEUE_ORDERS.
    """
    actor.require(roles.READ_DECISIONS)
    order = params.get("order") or "priority"
    show = params.get("show") or "open"
    if order not in QUEUE_ORDERS:
        raise InvalidInput(
            f"order must be one of {list(QUEUE_ORDERS)}.",
            code="invalid_parameters",
            details={"order": [f"must be one of {list(QUEUE_ORDERS)}"]},
        )
    if show not in (*QUEUE_SHOW, "all"):
        raise InvalidInput(
            "show must be open, resolved or all.",
            code="invalid_parameters",
            details={"show": ["must be open, resolved or all"]},
        )
    cases = (
        ReviewCase.objects.visible_to(actor)
        .select_related("decision__registered_model", "decision__model_version", "assignee")
        .annotate(distance=Abs(F("decision__score") - Value(settings.ATTEST_REVIEW_THRESHOLD)))
    )
    if show in QUEUE_SHOW:
        cases = cases.filter(state__in=QUEUE_SHOW[show])
    if params.get("model"):
        cases = cases.filter(decision__registered_model__name=params["model"])
    who = params.get("who") or ""
    if who not in ("", *QUEUE_WHO):
        raise InvalidInput.named("who", "must be mine or unassigned", code="invalid_parameters")
    if who == "mine":
        cases = cases.filter(assignee=actor.user)
    elif who == "unassigned":
        cases = cases.filter(assignee=None)
    return cases.order_by(*QUEUE_ORDERS[order])


def queue_models(actor: roles.Actor) -> list[str]:
    return list(RegisteredModel.objects.visible_to(actor).values_list("name", flat=True))


MAX_TAKE = 500  # the largest page of the queue


def _case_ids(raw_ids) -> list[int]:
    ids, bad = [], []
    for raw in raw_ids:
        try:
            ids.append(int(raw))
        except (TypeError, ValueError):
            bad.append(str(raw)[:40])
    if bad:
        raise InvalidInput(
            f"Case ids must be whole numbers, not {', '.join(bad)}.",
            code="invalid_cases",
            details={"case": [f"{b!r} is not a case id" for b in bad]},
        )
    if not ids:
        raise InvalidInput("Select at least one case to take.", code="invalid_cases")
    if len(set(ids)) > MAX_TAKE:
        raise InvalidInput(f"Take at most {MAX_TAKE} cases at once.", code="invalid_cases")
    return sorted(set(ids))


@transaction.atomic
def take_cases(actor: roles.Actor, raw_ids, *, ip=None) -> list[ReviewCase]:
    """A domain expert takes several cases at once: all of them, or none.

    Each case taken is audited as taking one is (its event, its record, its audit
    event). A case not in the actor's queue, resolved, or in review by someone
    else cannot be taken: then nothing is, and the error names every such case.
    Cases already in review by the actor stay as they are.
    """
    actor.require(roles.WORK_REVIEWS)
    ids = _case_ids(raw_ids)
    found = {
        case.pk: case
        for case in ReviewCase.objects.visible_to(actor)
        .select_for_update(of=("self",))
        .select_related("assignee")
        .filter(pk__in=ids)
        .order_by("pk")
    }
    refused: dict[str, str] = {}
    for pk in ids:
        case = found.get(pk)
        if case is None:
            refused[str(pk)] = "is not in your queue"
        elif case.state == ReviewCase.RESOLVED:
            refused[str(pk)] = "is already resolved"
        elif case.assignee_id not in (None, actor.user.pk):
            refused[str(pk)] = f"is in review by {case.assignee.get_username()}"
    if refused:
        named = "; ".join(f"case {pk} {why}" for pk, why in refused.items())
        raise Conflict(
            f"No case was taken: {named}.", code="cases_not_taken", details={"cases": refused}
        )
    taken = []
    for pk in ids:
        case = found[pk]
        if case.state == ReviewCase.IN_REVIEW and case.assignee_id == actor.user.pk:
            continue
        case.state, case.assignee = ReviewCase.IN_REVIEW, actor.user
        _transition(actor, case, "taken", ip, ["state", "assignee"])
        taken.append(case)
    return taken


@transaction.atomic
def take_case(actor: roles.Actor, case: ReviewCase, *, ip=None) -> ReviewCase:
    """The expert starts reviewing: the case is in review and assigned to them."""
    actor.require(roles.WORK_REVIEWS)
    case = ReviewCase.objects.select_for_update().get(pk=case.pk)
    if case.state == ReviewCase.RESOLVED:
        raise Conflict("This case is already resolved.", code="case_resolved")
    case.state, case.assignee = ReviewCase.IN_REVIEW, actor.user
    _transition(actor, case, "taken", ip, ["state", "assignee"])
    return case


@transaction.atomic
def resolve_case(
    actor: roles.Actor,
    case: ReviewCase,
    resolution: str,
    *,
    outcome=None,
    rationale: str = "",
    ip=None,
) -> ReviewCase:
    """Confirm the decision, or override it with a new outcome and a rationale (a new record)."""
    actor.require(roles.WORK_REVIEWS)
    case = ReviewCase.objects.select_for_update().select_related("decision").get(pk=case.pk)
    if case.state == ReviewCase.RESOLVED:
        raise Conflict("This case is already resolved.", code="case_resolved")
    if resolution not in (ReviewCase.CONFIRMED, ReviewCase.OVERRIDDEN):
        raise InvalidInput.named("resolution", "must be confirmed or overridden")
    rationale = (rationale or "").strip()
    if reason := text_problem(rationale):
        raise InvalidInput(
            f"The rationale {reason}.", code="invalid_override", details={"rationale": [reason]}
        )
    if resolution == ReviewCase.OVERRIDDEN:
        target = case.decision.model_version.parsed_schema.target
        errors = {}
        if outcome is None or (reason := target.label_error(outcome)):
            errors["outcome"] = reason if outcome is not None else "is required to override"
        if not rationale:
            errors["rationale"] = "is required to override"
        if errors:
            raise InvalidInput(
                "The override is incomplete.", code="invalid_override", details=errors
            )
        override = Override.objects.create(
            decision=case.decision,
            case=case,
            outcome=outcome,
            rationale=rationale,
            author=actor.user,
        )
        records.append(OVERRIDE.name, [override.pk])
    case.state, case.resolution = ReviewCase.RESOLVED, resolution
    case.assignee = case.assignee or actor.user
    case.resolved_at = timezone.now()
    _transition(
        actor,
        case,
        "resolved",
        ip,
        ["state", "resolution", "assignee", "resolved_at"],
        resolution=resolution,
        rationale=rationale,
        outcome=outcome,
    )
    return case
