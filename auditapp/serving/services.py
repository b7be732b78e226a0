"""Serving: predictions recorded as decisions, and the traffic policy that routes them.

A prediction goes the ingestion's way: its inputs are checked by
`decisions.validation.check_decisions` (the version's schema, as for any decision),
the model answers, and `decisions.services.record_checked_decisions` stores the
decisions of one call in one transaction (hashed, sealed later, explained as any
decision: its `decisions_recorded` signal queues the explanations). Shadow versions
score the same inputs in a task sent once that transaction commits.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from celery import current_app
from django.db import transaction
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.accounts.revision import RevisionCache
from auditapp.approvals.models import Approval
from auditapp.approvals.services import gated, request_approval
from auditapp.decisions.models import SHADOW, Decision, request_ids_q
from auditapp.decisions.services import record_checked_decisions
from auditapp.decisions.validation import CheckedDecision, check_decisions
from auditapp.errors import Conflict, InvalidInput, NotFound, ServiceError, Unavailable
from auditapp.hashing import canonical_json
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.serving import warm
from auditapp.serving.models import TrafficPolicy
from auditapp.serving.policies import (
    Routing,
    current_policy,
    implied_document,
    parse_policy,
    routing_for,
)
from explain.features import split_pipeline
from explain.frames import input_frame
from explain.publishing import send_soon
from explain.whatif import model_answers

log = logging.getLogger(__name__)

MAX_INSTANCES = 1_000  # per request (API.md): a batch is answered while the client waits
INSTANCE_FIELDS = frozenset({"inputs", "request_id", "subject_ref", "metadata"})
SHADOW_TASK = "serving.shadow"
SHADOW_ACTOR = "serving (shadow versions)"  # who recorded shadow decisions, in the audit log
TRAFFIC_EVENT = "model.traffic_changed"
TRAFFIC_KIND = "traffic"  # the four-eyes kind of a policy change (serving/apps.py)


# --- looking the model up --------------------------------------------------------------

# What a predict reads before its work, kept per process at the configuration revision its
# token was read at (accounts/revision.py): (actor, name) -> the model it may see, and
# model id -> the routing in force. A change of either changes the revision.
_visible = RevisionCache()
_in_force = RevisionCache()


def model_for(actor: roles.Actor, name: str, capability: str) -> RegisteredModel:
    """The model, if the actor may do `capability` (else 403) and may see it (else 404,
    the answer a missing model gets: a hidden one's existence is not revealed)."""
    actor.require(capability)
    key = (actor.identity, name)
    model = _visible.get(key, actor.revision)
    if model is None:
        model = RegisteredModel.objects.visible_to(actor).filter(name=name).first()
        if model is None:
            raise NotFound(f"No model named {name!r}.")
        _visible.put(key, actor.revision, model)
    return model


def routing_in_force(model: RegisteredModel, revision: str | None) -> Routing:
    """The routing of the policy in force (or of the production version, without one)."""
    routing = _in_force.get(model.pk, revision)
    if routing is None:
        routing = routing_for(model, current_policy(model))
        _in_force.put(model.pk, revision, routing)
    return routing


# --- the traffic policy ------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyView:
    """The policy in force (or the one implied without a row) and its revision."""

    model: RegisteredModel
    document: dict
    policy: TrafficPolicy | None

    def as_json(self) -> dict:
        policy = self.policy
        return {
            "model": self.model.name,
            **self.document,
            "revision": policy.pk if policy else None,
            "action": policy.action if policy else None,
            "rolled_back": policy.rolled_back_id if policy else None,
            "changed_by": (policy.actor_name or None) if policy else None,
            "changed_at": policy.changed_at if policy else None,
        }


def read_traffic(model: RegisteredModel) -> PolicyView:
    policy = current_policy(model)
    if policy is not None:
        return PolicyView(model, {"fallback": None, **policy.document}, policy)
    return PolicyView(model, {**implied_document(routing_for(model, None)), "fallback": None}, None)


def traffic_history(model: RegisteredModel, limit: int = 50) -> list[TrafficPolicy]:
    return list(TrafficPolicy.objects.filter(registered_model=model).order_by("-id")[:limit])


def change_traffic(
    actor: roles.Actor, model: RegisteredModel, payload: Any, *, ip=None, approval=None
) -> tuple[PolicyView, bool] | Approval:
    """Put a new policy in force (a new row, audited with before and after); returns it and
    whether anything changed (the same policy again writes nothing). Under four-eyes, a
    change is asked for instead (the Approval returned); `approval`: the approved request
    being applied, as its requester's."""
    actor.require(roles.CHANGE_TRAFFIC)
    document = parse_policy(model, payload)
    with transaction.atomic():
        current = _lock_current(model)
        _check_base(approval, current)
        if current is not None and canonical_json(current.document) == canonical_json(document):
            return PolicyView(model, document, current), False
        if approval is None and gated(actor, model):
            return _ask(
                actor, model, {"action": TrafficPolicy.PUT, "document": document}, current, ip
            )
        policy = _append(
            actor,
            model,
            document,
            replaced=current,
            action=TrafficPolicy.PUT,
            ip=ip,
            approval=approval,
        )
    return PolicyView(model, document, policy), True


def roll_back_traffic(
    actor: roles.Actor, model: RegisteredModel, *, ip=None, approval=None
) -> PolicyView | Approval:
    """Back to the policy the one in force replaced (audited). Again: further back. Under
    four-eyes, asked for instead (as change_traffic)."""
    actor.require(roles.CHANGE_TRAFFIC)
    with transaction.atomic():
        current = _lock_current(model)
        _check_base(approval, current)
        previous = current.replaced if current is not None else None
        if previous is None:
            raise Conflict(
                "There is no earlier traffic policy to roll back to.", code="nothing_to_roll_back"
            )
        try:  # its versions are checked again: one may have been archived since
            parse_policy(model, previous.document)
        except InvalidInput as exc:
            raise Conflict(
                f"The previous traffic policy (revision {previous.pk}) cannot be put back: "
                f"{exc.message}",
                code="rollback_invalid",
                details=exc.details,
            ) from None
        if approval is None and gated(actor, model):
            change = {"action": TrafficPolicy.ROLLBACK, "document": previous.document}
            return _ask(actor, model, change, current, ip)
        policy = _append(
            actor,
            model,
            previous.document,
            replaced=previous.replaced,
            action=TrafficPolicy.ROLLBACK,
            rolled_back=current,
            ip=ip,
            approval=approval,
        )
    return PolicyView(model, previous.document, policy)


def _ask(actor, model, change: dict, current: TrafficPolicy | None, ip) -> Approval:
    """A request for a traffic change, made against the revision in force now."""
    revision = current.pk if current is not None else None
    verb = (
        "roll back to the previous policy"
        if change["action"] == TrafficPolicy.ROLLBACK
        else ("production " + str(change["document"].get("production")))
    )
    return request_approval(
        actor,
        TRAFFIC_KIND,
        registered_model=model,
        change={**change, "revision": revision},
        summary=f"traffic policy (revision {revision or 'none'}): {verb}",
        ip=ip,
    )


def _check_base(approval, current: TrafficPolicy | None) -> None:
    """An approved change applies only to the revision it was asked against."""
    if approval is None:
        return
    revision = current.pk if current is not None else None
    if approval.change.get("revision") != revision:
        raise Conflict(
            f"The traffic policy changed since the request (revision {revision} is in force, "
            f"the request was made against {approval.change.get('revision')}); nothing was "
            "changed.",
            code="approval_stale",
        )


def apply_approved_traffic(approval, approver: roles.Actor, ip: str | None) -> dict:
    """An approved traffic change, made as its requester's (approvals.changes)."""
    requester = roles.Actor(user=approval.requested_by)
    model = RegisteredModel.objects.get(pk=approval.registered_model_id)
    if approval.change["action"] == TrafficPolicy.ROLLBACK:
        view = roll_back_traffic(requester, model, ip=ip, approval=approval)
    else:
        try:
            answer = change_traffic(
                requester, model, approval.change["document"], ip=ip, approval=approval
            )
        except InvalidInput as exc:  # a version it names was archived since
            raise Conflict(
                f"The requested policy is no longer valid: {exc.message}",
                code="approval_stale",
                details=exc.details,
            ) from None
        view = answer[0]  # type: ignore[index]
    return {"traffic_policy": view.policy.pk if view.policy else None}  # type: ignore[union-attr]


def _lock_current(model: RegisteredModel) -> TrafficPolicy | None:
    """Changes of one model's policy wait for each other: `before` is what was in force."""
    RegisteredModel.objects.select_for_update().filter(pk=model.pk).first()
    return (
        TrafficPolicy.objects.filter(registered_model=model)
        .select_related("replaced")
        .order_by("-id")
        .first()
    )


def _append(actor, model, document, *, replaced, action, rolled_back=None, ip=None, approval=None):
    policy = TrafficPolicy.objects.create(
        registered_model=model,
        document=document,
        action=action,
        replaced=replaced,
        rolled_back=rolled_back,
        changed_by=actor.user if actor.user.is_authenticated else None,
        actor_name=actor.label[:200],
        changed_at=timezone.now(),
    )
    before = (rolled_back or replaced).document if (rolled_back or replaced) else None
    record_event(
        TRAFFIC_EVENT,
        actor=actor,
        target=model,
        ip=ip,
        revision=policy.pk,
        change=action,
        before=before,
        after=document,
        **({"approval": approval.pk} if approval is not None else {}),
    )
    return policy


# --- predictions -------------------------------------------------------------------------


def instances_of(payload: Any) -> tuple[list[Any], bool]:
    """The instances of a predict body, and whether it was a batch (`{"instances": [...]}`)."""
    if isinstance(payload, dict) and "instances" in payload:
        instances = payload["instances"]
        extra = sorted(str(k) for k in payload if k != "instances")
        if extra:
            raise InvalidInput(
                'A batch is {"instances": [...]} alone.',
                details=[{"field": k, "message": "is not a batch field"} for k in extra],
            )
        if not isinstance(instances, list) or not instances:
            raise InvalidInput('"instances" must be a non-empty list of instance objects.')
        limit = MAX_INSTANCES
        if len(instances) > limit:
            raise InvalidInput(
                f"{len(instances):,} instances in one request; at most {limit:,} are accepted.",
                code="too_many_instances",
                details={"limit": limit, "instances": len(instances)},
            )
        return instances, True
    if isinstance(payload, dict):
        return [payload], False
    raise InvalidInput(
        'The body must be {"inputs": {...}, "request_id": "..."} or {"instances": [...]}.'
    )


@dataclass
class Served:
    """One instance's answer."""

    prediction: Any
    score: float | None
    decision_id: int
    version: str
    arm: str | None

    def as_json(self) -> dict:
        return {
            "prediction": self.prediction,
            "score": self.score,
            "decision_id": self.decision_id,
            "version": self.version,
            "arm": self.arm,
        }


def predict(
    actor: roles.Actor, model: RegisteredModel, payload: Any, *, ip=None
) -> tuple[list[Served], bool]:
    """Route, check, predict and record each instance; one answer per instance, in order.

    A request_id recorded before answers with its stored decision, not a new prediction
    (409 if its inputs, subject or metadata differ). Raises InvalidInput naming each bad
    instance and field (nothing stored), Unavailable when nothing may answer.
    """
    actor.require(roles.PREDICT)
    instances, batch = instances_of(payload)
    try:
        return _predict(actor, model, instances, ip, retries=False), batch
    except Conflict:
        # One of these request_ids was stored before: by an earlier try of this client
        # (a retry: answered with what was stored, 409 if it differs) or by a request
        # racing this one. New request_ids are the common case: they are not looked up.
        return _predict(actor, model, instances, ip, retries=True), batch


def _predict(actor, model, instances, ip, *, retries: bool) -> list[Served]:
    # read once: this request sees one revision of the policy, whole
    routing = routing_in_force(model, actor.revision)
    checked = _check(model, routing, instances)
    stored = _stored(model, checked) if retries else {}
    new = [c for c in checked if c.request_id not in stored]
    _run_models(routing, new)
    answers: dict[int, Served] = {}
    if not new:  # every one a retry: the stored answers, nothing to write
        return [stored[c.request_id] for c in checked]
    # One transaction (record_checked_decisions'); the shadows are sent once it committed.
    results = record_checked_decisions(
        actor, new, source="serving", recorded_at=timezone.now(), ip=ip
    )
    ids = []
    for decision, result in zip(new, results, strict=True):
        ids.append(result["id"])
        answers[decision.index] = Served(
            decision.prediction,
            decision.score,
            result["id"],
            decision.model_version.version,
            decision.arm,
        )
    shadows = [v.pk for v in routing.shadows()]
    if ids and shadows:
        transaction.on_commit(_sender(ids, shadows))
    for decision in checked:
        if decision.index not in answers:
            answers[decision.index] = stored[decision.request_id]
    return [answers[i] for i in range(len(instances))]


def _check(model: RegisteredModel, routing: Routing, instances: list[Any]) -> list[CheckedDecision]:
    """Each instance routed to its arm and checked as ingestion checks a decision."""
    items, arms, refused = [], {}, {}
    for index, instance in enumerate(instances):
        item = dict(instance) if isinstance(instance, dict) else instance
        if isinstance(item, dict):
            refused[index] = [
                {"field": str(k), "message": "is not an instance field"}
                for k in item
                if k not in INSTANCE_FIELDS
            ]
            key = item.get("subject_ref") or item.get("request_id")
            arm, version = routing.arm_for(str(key), model.name)
            if version is None:
                raise _nothing_to_serve(routing)
            arms[index] = arm
            item = {
                **{k: v for k, v in item.items() if k in INSTANCE_FIELDS},
                "model": model.name,
                "version": version.version,
            }
        items.append(item)
    versions = {(model.name, v.version): v for v in routing.versions()}
    checked, invalid = check_decisions(items, versions, timezone.now(), served=True)
    invalid = _merge(invalid, refused)
    if invalid:
        raise InvalidInput(
            f"{len(invalid)} of {len(instances)} instances are invalid; nothing was predicted "
            "or stored.",
            code="invalid_instances",
            details=invalid,
        )
    return [replace(c, arm=arms[c.index]) for c in checked]


def _merge(invalid: list[dict], refused: dict[int, list[dict]]) -> list[dict]:
    by_index = {entry["index"]: entry for entry in invalid}
    for index, errors in refused.items():
        if errors:
            entry = by_index.setdefault(index, {"index": index, "errors": []})
            entry["errors"] = errors + entry["errors"]
    return [by_index[i] for i in sorted(by_index)]


def _nothing_to_serve(routing: Routing) -> ServiceError:
    if not routing.enabled:
        return Unavailable(
            "Serving of this model is turned off and its traffic policy names no fallback.",
            code="serving_disabled",
        )
    return Conflict(
        "This model has no version to serve: put a traffic policy, or move a version to "
        "the production stage.",
        code="nothing_to_serve",
    )


def _stored(model: RegisteredModel, checked: list[CheckedDecision]) -> dict[str, Served]:
    """Decisions already recorded under these request_ids: a retry's answer (409 if the
    retry differs from what was recorded)."""
    found = Decision.objects.filter(
        request_ids_q([c.request_id for c in checked], model_id=model.pk)
    ).select_related("model_version")
    by_request = {d.request_id: d for d in found}
    conflicts = []
    answers = {}
    for decision in checked:
        stored = by_request.get(decision.request_id)
        if stored is None:
            continue
        if not _same_request(stored, decision):
            conflicts.append(
                {"index": decision.index, "request_id": decision.request_id, "id": stored.pk}
            )
            continue
        answers[decision.request_id] = Served(
            stored.prediction, stored.score, stored.pk, stored.model_version.version, stored.arm
        )
    if conflicts:
        raise Conflict(
            f"{len(conflicts)} request_id(s) were already recorded with other inputs, subject "
            "or metadata; nothing was stored.",
            code="request_id_conflict",
            details=conflicts,
        )
    return answers


def _same_request(stored: Decision, decision: CheckedDecision) -> bool:
    sent = (decision.inputs, decision.subject_ref, decision.metadata)
    return canonical_json(
        [stored.full_inputs(), stored.subject_ref, stored.metadata]
    ) == canonical_json(list(sent))


def _run_models(routing: Routing, decisions: list[CheckedDecision]) -> None:
    """Each version's rows through its model in one call; the answers set on the rows."""
    by_version: dict[int, list[CheckedDecision]] = defaultdict(list)
    for decision in decisions:
        by_version[decision.model_version.pk].append(decision)
    for rows in by_version.values():
        version = rows[0].model_version
        context = warm.context_for(routing, version)
        predictions, scores = score_rows(context, [row.inputs for row in rows])
        moment = timezone.now()
        for row, prediction, score in zip(rows, predictions, scores, strict=True):
            row.prediction, row.score, row.predicted_at = prediction, score, moment


def score_rows(context, rows: list[dict]) -> tuple[list, list]:
    """The model's prediction and score on each row, as what-ifs and monitoring take them.

    A pipeline's predict and predict_proba each run its preprocessing, then the final
    estimator: here the preprocessing runs once for both (on a one-hot pipeline it is most
    of the model's time), which is what each of them computes."""
    preprocessing, estimator = split_pipeline(context.model)
    frame = input_frame(context.schema, rows)
    transformed = frame if preprocessing is None else preprocessing.transform(frame)
    return model_answers(context, estimator, transformed)


def _sender(decision_ids: list[int], shadow_ids: list[int]) -> Callable[[], None]:
    """Send the shadow task from the publisher thread: never on the request's path."""

    def send() -> None:
        current_app.send_task(SHADOW_TASK, args=[decision_ids, shadow_ids])

    return lambda: send_soon(send)


# --- shadow versions (a worker) ----------------------------------------------------------


def score_shadows(decision_ids: list[int], shadow_version_ids: list[int]) -> int:
    """Score served decisions' inputs with shadow versions and record the results (arm
    `shadow`, `served_by` the served decision). Idempotent: a shadow decision's request_id
    is `shadow-<version>-<served id>`, and what is recorded already is skipped."""
    served = list(Decision.objects.filter(pk__in=decision_ids).select_related("registered_model"))
    shadows = list(
        ModelVersion.objects.select_related("registered_model").filter(pk__in=shadow_version_ids)
    )
    recorded = 0
    for version in shadows:
        recorded += _score_shadow(
            version, [d for d in served if d.registered_model_id == version.registered_model_id]
        )
    return recorded


def shadow_request_id(version: ModelVersion, served: Decision) -> str:
    return f"shadow-{version.version}-{served.pk}"


def _score_shadow(version: ModelVersion, served: list[Decision]) -> int:
    model = version.registered_model
    wanted = {shadow_request_id(version, d): d for d in served}
    done = set(
        Decision.objects.filter(request_ids_q(wanted, model_id=model.pk)).values_list(
            "request_id", flat=True
        )
    )
    items = [
        {
            "model": model.name,
            "version": version.version,
            "request_id": request_id,
            "inputs": decision.full_inputs(),
            "subject_ref": decision.subject_ref,
            "metadata": decision.metadata,
        }
        for request_id, decision in wanted.items()
        if request_id not in done
    ]
    if not items:
        return 0
    checked, invalid = check_decisions(
        items, {(model.name, version.version): version}, timezone.now(), served=True
    )
    for entry in invalid:  # the shadow's schema refuses what production took: say so, go on
        log.warning(
            "serving.shadow.invalid version=%s request_id=%s errors=%s",
            version.pk,
            entry.get("request_id"),
            entry["errors"],
        )
    if not checked:
        return 0
    context = warm.context_for(Routing(None, None, None, 0.0, (version,), True, None), version)
    predictions, scores = score_rows(context, [c.inputs for c in checked])
    moment = timezone.now()
    for decision, prediction, score in zip(checked, predictions, scores, strict=True):
        decision.prediction, decision.score, decision.predicted_at = prediction, score, moment
        decision.arm = SHADOW
        decision.served_by = wanted[decision.request_id].pk
    actor = roles.system_actor(SHADOW_ACTOR)
    record_checked_decisions(actor, checked, source="serving", recorded_at=moment)
    return len(checked)
