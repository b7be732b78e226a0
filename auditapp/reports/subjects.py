"""A person's data rights: access (GDPR Art. 15) and erasure (Art. 17) requests.

Filed by compliance officers and admins (roles.FILE_SUBJECT_REQUESTS) for a
`subject_ref`; read by them and auditors (READ_SUBJECT_REQUESTS). Every decision about
the subject in the models the actor may see counts (a hidden model is as missing).

- access: the report (JSON or PDF) of every such decision: model version, inputs
  (masked for a reader without view_sensitive), outcome, the principal reasons (top
  SHAP features), outcomes and human review (cases, overrides, feedback). It is built
  at each download from the data as it is then, and each download is an audit event:
  no copy of the inputs is kept in a file.
- erasure: the decisions' personal inputs erased (decisions/erasure.py), the proof
  still verifying; refused as a whole, nothing erased, when a legal hold covers any of
  them, a retention duty keeps any of them, or any cannot be erased (an older document
  form, copies that cannot be erased yet). The refusal names the reason.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.decisions import erasure, input_retention
from auditapp.decisions.models import Decision, Erasure
from auditapp.decisions.presenters import DecisionPresenter
from auditapp.decisions.reasons import adverse_reasons
from auditapp.errors import InvalidInput, NotFound
from auditapp.filtering import refuse_unknown_fields
from auditapp.hashing import canonical_time
from auditapp.registry.models import RegisteredModel
from auditapp.reports.models import SubjectRequest
from auditapp.reports.render import content_sha256, render_json, render_pdf
from auditapp.reviews.models import Feedback, Override, ReviewCase
from auditapp.textcheck import identifier_problem
from explain.models import Explanation

FILED_EVENT = "subject_request.filed"
DOWNLOADED_EVENT = "subject_request.downloaded"
FORMATS = {"json": "application/json", "pdf": "application/pdf"}
MAX_REASON = 2000
DOCUMENT_VERSION = 1


def visible_requests(actor: roles.Actor) -> QuerySet:
    """The requests the actor may read. A request is about a person, and says what every
    model decided about them (counts, holds, refusals naming models): to an actor who
    sees only some models (a token narrowed with `--models`), one about a subject that a
    model it cannot see decided is as missing."""
    actor.require(roles.READ_SUBJECT_REQUESTS)
    found = SubjectRequest.objects.select_related("requested_by")
    scope = actor.model_scope
    if scope.all_models and scope.names is None:
        return found
    unseen = Decision.objects.exclude(
        registered_model__in=RegisteredModel.objects.visible_to(actor)
    ).filter(subject_ref__gt="")  # no NULL: NOT IN a list holding one matches nothing
    return found.exclude(subject_ref__in=unseen.values("subject_ref"))


def get_request_for_actor(actor: roles.Actor, request_id: int) -> SubjectRequest:
    found = visible_requests(actor).filter(pk=request_id).first()
    if found is None:
        raise NotFound(f"No subject request {request_id}.")
    return found


def request_json(request: SubjectRequest) -> dict[str, Any]:
    base = f"/api/v1/subject-requests/{request.pk}"
    access = request.kind == SubjectRequest.ACCESS
    return {
        "id": request.pk,
        "subject_ref": request.subject_ref,
        "kind": request.kind,
        "reason": request.reason,
        "status": request.status,
        "progress": 100,
        "status_url": base,
        "download_url": {f: f"{base}/report.{f}" for f in FORMATS} if access else None,
        "result": request.result,
        "refusal": request.refusal or None,
        "erasure": request.erasure_id,
        "requested_by": request.requested_by.get_username() if request.requested_by else None,
        "requested_at": canonical_time(request.requested_at),
    }


def subject_decisions(actor: roles.Actor, subject_ref: str) -> QuerySet:
    return Decision.objects.visible_to(actor).filter(subject_ref=subject_ref)


def file_subject_request(
    actor: roles.Actor, data: Any, *, ip=None, via: str = "api"
) -> SubjectRequest:
    """Record the request and answer it: access at once; erasure done or refused whole."""
    actor.require(roles.FILE_SUBJECT_REQUESTS)
    subject, kind, reason = _checked(data)
    request = SubjectRequest(
        subject_ref=subject,
        kind=kind,
        reason=reason,
        requested_by=actor.user if actor.user.is_authenticated else None,
        requested_at=timezone.now(),
    )
    with transaction.atomic():
        decisions = subject_decisions(actor, subject)
        if kind == SubjectRequest.ACCESS:
            request.status = SubjectRequest.DONE
            request.result = {"decisions": decisions.count()}
        else:
            _erase(actor, request, decisions, via)
        request.save(force_insert=True)
        record_event(
            FILED_EVENT,
            actor=actor,
            target=request,
            ip=ip,
            via=via,
            kind=kind,
            subject_ref=subject,
            status=request.status,
            decisions=request.result.get("decisions"),
            erasure=request.erasure_id,
        )
    return request


def _erase(actor: roles.Actor, request: SubjectRequest, decisions: QuerySet, via: str) -> None:
    plan = erasure.plan_erasure(
        decisions,
        cause=Erasure.SUBJECT_REQUEST,
        reason=request.reason,
        subject_ref=request.subject_ref,
    )
    refusals = plan.refusals + input_retention.duty_refusals(decisions)
    found = plan.already + plan.older_form + sum(plan.held.values())
    found += sum(plan.copies.values()) + len(plan.ids)
    request.result = {"decisions": found, **plan.as_dict()}
    if refusals:
        request.status = SubjectRequest.REFUSED
        request.refusal = "Refused, nothing erased: " + "; ".join(refusals) + "."
        request.result["erased"] = 0
        return
    erasure.erase(actor, plan, via=via)
    request.status = SubjectRequest.DONE
    request.erasure = plan.declaration
    request.result = {"decisions": found, "erased": len(plan.ids), **plan.as_dict()}


def _checked(data: Any) -> tuple[str, str, str]:
    errors: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        raise InvalidInput('Send {"subject_ref", "kind": "access" | "erasure", "reason"}.')
    refuse_unknown_fields(data, ("subject_ref", "kind", "reason"), "subject request")
    subject = data.get("subject_ref")
    if not isinstance(subject, str) or not subject.strip() or len(subject) > 200:
        errors["subject_ref"] = ["A subject reference: text of 1 to 200 characters."]
    elif problem := identifier_problem(subject):  # as ingestion: no decision could have it
        errors["subject_ref"] = [problem]
    kind = data.get("kind")
    if kind not in (SubjectRequest.ACCESS, SubjectRequest.ERASURE):
        errors["kind"] = ['"access" or "erasure".']
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        errors["reason"] = [f"A reason is required (at most {MAX_REASON} characters)."]
    if errors:
        raise InvalidInput("The subject request is not valid.", details=errors)
    return str(subject), str(kind), str(reason).strip()


# --- the access report ---------------------------------------------------------------


def access_document(actor: roles.Actor, request: SubjectRequest) -> dict[str, Any]:
    """Every decision about the subject that the actor may see, as the report shows it."""
    presenter = DecisionPresenter(actor)
    decisions = list(
        subject_decisions(actor, request.subject_ref).with_related().order_by("predicted_at", "id")
    )
    ids = [d.pk for d in decisions]
    shap = {
        e.decision_id: e
        for e in Explanation.objects.with_results().filter(decision_id__in=ids, method="shap")
    }
    cases = _by_decision(ReviewCase.objects.filter(decision_id__in=ids).order_by("opened_at"))
    overrides = _by_decision(Override.objects.filter(decision_id__in=ids).order_by("created_at"))
    feedback = _by_decision(Feedback.objects.filter(decision_id__in=ids).order_by("created_at"))
    return {
        "attest_document": "subject_access_report",
        "document_version": DOCUMENT_VERSION,
        "request": request.pk,
        "subject_ref": request.subject_ref,
        "generated_at": canonical_time(timezone.now()),
        "generated_for": actor.label,
        "inputs_masked": not presenter.show_sensitive,
        "decisions": [
            _decision_entry(
                d, presenter, shap.get(d.pk), cases.get(d.pk, []), overrides.get(d.pk, [])
            )
            | {"feedback": [_feedback(f) for f in feedback.get(d.pk, [])]}
            for d in decisions
        ],
    }


def _by_decision(rows) -> dict[int, list]:
    out: dict[int, list] = {}
    for row in rows:
        out.setdefault(row.decision_id, []).append(row)
    return out


def _decision_entry(
    decision: Decision, presenter: DecisionPresenter, shap, cases: list, overrides: list
) -> dict[str, Any]:
    summary = presenter.summary(decision)
    version = decision.model_version
    schema = version.parsed_schema
    return {
        "decision_id": decision.pk,
        "request_id": decision.request_id,
        "model": decision.registered_model.name,
        "version": version.version,
        "artifact_sha256": version.artifact_sha256,
        "predicted_at": canonical_time(decision.predicted_at),
        "recorded_at": canonical_time(decision.recorded_at),
        "inputs": summary["inputs"],
        "masked_features": summary["masked_features"],
        "inputs_erased": decision.erased,
        "prediction": decision.prediction,
        "outcome": schema.target.outcome_text(decision.prediction),
        "score": decision.score,
        "content_hash": summary["content_hash"],
        "reasons": _reasons(decision, schema, shap, summary["masked_features"]),
        "outcomes": [
            {"outcome": o.outcome, "observed_at": canonical_time(o.observed_at)}
            for o in decision.outcomes.all()
        ],
        "reviews": [
            {
                "case": c.pk,
                "state": c.state,
                "resolution": c.resolution or None,
                "opened_at": canonical_time(c.opened_at),
                "resolved_at": canonical_time(c.resolved_at) if c.resolved_at else None,
                "reasons": [f"{label}: {detail}" for label, detail in c.reason_texts()],
            }
            for c in cases
        ],
        "overrides": [
            {
                "outcome": o.outcome,
                "rationale": o.rationale,
                "created_at": canonical_time(o.created_at),
            }
            for o in overrides
        ],
    }


def _reasons(decision: Decision, schema, shap, masked: list[str]) -> list[dict[str, Any]]:
    if shap is None or shap.status != Explanation.DONE:
        return []
    reasons = adverse_reasons(schema, shap.attributions, decision.full_inputs(), withheld=masked)
    return [
        {
            "feature": r.feature,
            "label": r.label,
            "direction": r.direction,
            "contribution": r.attribution,
            "text": r.text if not decision.erased else f"{r.label} ({r.direction})",
        }
        for r in reasons
    ]


def _feedback(row: Feedback) -> dict[str, Any]:
    return {
        "verdict": row.verdict,
        "comment": row.comment,
        "created_at": canonical_time(row.created_at),
    }


def download_access_report(
    actor: roles.Actor, request: SubjectRequest, fmt: str, *, ip=None, via: str = "api"
) -> tuple[bytes, str]:
    """The access report as JSON or PDF, built now; the download is audited."""
    actor.require(roles.READ_SUBJECT_REQUESTS)
    if request.kind != SubjectRequest.ACCESS or fmt not in FORMATS:
        raise NotFound(f"Subject request {request.pk} has no {fmt} report.")
    document = access_document(actor, request)
    digest = content_sha256(document)
    if fmt == "json":
        content = render_json({"content_sha256": digest, "document": document})
    else:
        content = render_pdf(
            "reports/subject_access_pdf.html",
            {"report": document, "content_sha256": digest},
            title=f"Access report for {request.subject_ref}",
        )
    record_event(
        DOWNLOADED_EVENT,
        actor=actor,
        target=request,
        ip=ip,
        via=via,
        format=fmt,
        subject_ref=request.subject_ref,
        decisions=len(document["decisions"]),
        masked=document["inputs_masked"],
    )
    return content, digest
