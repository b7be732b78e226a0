"""Requesting, generating and downloading reports. Views, API views and tasks call these.

A request is validated, stored and audited in one transaction; the generation
is sent to the `reports` queue after commit. The worker writes progress to the
row as sections are done, then the file with its sha256, or the failure with
its reason.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, time, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.errors import Conflict, InvalidInput, NotFound
from auditapp.filtering import in_utc, refuse_unknown_fields
from auditapp.hashing import canonical_time
from auditapp.registry.lookups import get_model_for_actor, get_version_for_actor
from auditapp.registry.models import ModelVersion
from auditapp.replicas import from_replica
from auditapp.reports import render
from auditapp.reports.compliance import SECTION_TITLES, build_compliance_document
from auditapp.reports.models import Report
from auditapp.reports.notice import build_notice_document, shap_explanation
from auditapp.snapshots import write_now
from auditapp.tasking import TRANSIENT_ERRORS
from auditapp.textcheck import identifier_problem

log = logging.getLogger(__name__)

KINDS = dict(Report.KINDS)


# --- reading ------------------------------------------------------------------------


def visible_reports(actor: roles.Actor) -> QuerySet:
    """A notice is the person's own data: not even listed for roles that may not export it."""
    actor.require(roles.EXPORT_REPORTS)
    reports = Report.objects.visible_to(actor)
    if not all(actor.can(capability) for capability in roles.EXPORT_NOTICES):
        reports = reports.exclude(kind=Report.NOTICE)
    return reports.select_related("registered_model", "model_version", "requested_by")


def get_report_for_actor(actor: roles.Actor, report_id: int) -> Report:
    """A report about a model the actor may not see is not found (404), like a missing one."""
    report = visible_reports(actor).filter(pk=report_id).first()
    if report is None:
        raise NotFound(f"No report {report_id}.")
    return report


def report_json(report: Report) -> dict[str, Any]:
    done = report.status == Report.DONE
    return {
        "id": report.pk,
        "kind": report.kind,
        "format": report.format,
        "parameters": report.parameters,
        "status": report.status,
        "progress": report.progress,
        "status_url": f"/api/v1/reports/{report.pk}",
        "download_url": f"/api/v1/reports/{report.pk}/download" if done else None,
        "sha256": report.sha256 or None,
        "content_sha256": report.content_sha256 or None,
        "error": report.error or None,
        "requested_by": report.requested_by.get_username() if report.requested_by else None,
        "requested_at": report.requested_at,
        "started_at": report.started_at,
        "finished_at": report.finished_at,
    }


# --- requesting -----------------------------------------------------------------------


# The fields of a request for each kind of report.
REQUEST_FIELDS = {
    Report.COMPLIANCE: ("kind", "format", "model", "version", "from", "to"),
    Report.NOTICE: ("kind", "format", "decision_id"),
}


def request_report(
    actor: roles.Actor, data: Any, *, ip: str | None = None, via: str = "api"
) -> Report:
    """Validate, store and audit a report request; generation starts after commit."""
    actor.require(roles.EXPORT_REPORTS)
    if not isinstance(data, dict):
        raise InvalidInput("The request must be a JSON object.", code="invalid")
    kind = data.get("kind")
    if kind in REQUEST_FIELDS:
        refuse_unknown_fields(data, REQUEST_FIELDS[kind], "report request")
    if kind == Report.COMPLIANCE:
        fields = _compliance_request(actor, data)
    elif kind == Report.NOTICE:
        fields = _notice_request(actor, data)
    else:
        raise InvalidInput(
            f"kind must be one of {', '.join(KINDS)}.",
            details={"kind": [f"unknown kind {kind!r}" if kind else "this field is required"]},
        )
    with transaction.atomic():
        report = Report.objects.create(kind=kind, requested_by=_user(actor), **fields)
        record_event(
            "report.requested",
            actor=actor,
            target=report,
            ip=ip,
            via=via,
            kind=kind,
            format=report.format,
            model=report.registered_model.name,
            version=report.model_version.version,
            **{k: v for k, v in report.parameters.items() if k not in ("model", "version")},
        )
        transaction.on_commit(lambda: enqueue_generation(report.pk))
    return report


def _user(actor: roles.Actor):
    return actor.user if actor.user.is_authenticated else None


def _check_format(kind: str, value: Any, errors: dict[str, list[str]]) -> str:
    allowed = Report.FORMATS_BY_KIND[kind]
    if value not in allowed:
        errors["format"] = [
            f"{value!r} is not a format of a {KINDS[kind]}: use one of {', '.join(allowed)}"
            if value is not None
            else f"this field is required (one of {', '.join(allowed)})"
        ]
    return value


def _compliance_request(actor: roles.Actor, data: dict) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    fmt = _check_format(Report.COMPLIANCE, data.get("format"), errors)
    start = _moment(data, "from", errors)
    end = _moment(data, "to", errors)
    _check_period(start, end, errors)
    version = _version(actor, data, errors)
    if errors:
        raise InvalidInput("The report request is invalid.", code="invalid", details=errors)
    parameters = {
        "model": version.registered_model.name,
        "version": version.version,
        "from": canonical_time(start),
        "to": canonical_time(end),
    }
    return {
        "format": fmt,
        "parameters": parameters,
        "registered_model": version.registered_model,
        "model_version": version,
    }


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _check_period(start, end, errors: dict[str, list[str]]) -> None:
    """A period a report can cover: after 1970, not starting in the future, not too long."""
    longest = settings.ATTEST_REPORT_MAX_DAYS
    for key, moment in (("from", start), ("to", end)):
        if moment is not None and moment < EPOCH:
            errors[key] = [f"{canonical_time(moment)} is before 1970; no decision can be there"]
    if errors.keys() & {"from", "to"} or not (start and end):
        return
    if start >= end:
        errors["to"] = ["the period is empty: from must be before to"]
    elif start > timezone.now():
        errors["from"] = ["is in the future; no decision can be in the period yet"]
    elif end - start > timedelta(days=longest):
        errors["to"] = [
            f"the period is {(end - start).days} days long; a report covers at most "
            f"{longest} days (ATTEST_REPORT_MAX_DAYS)"
        ]


def _moment(data: dict, key: str, errors: dict[str, list[str]]) -> datetime | None:
    """An ISO-8601 time with a time zone, or a date (midnight UTC)."""
    value = data.get(key)
    if value in (None, ""):
        errors[key] = ["this field is required (ISO-8601, e.g. 2026-11-01T00:00:00Z)"]
        return None
    if not isinstance(value, str):
        errors[key] = [f"must be an ISO-8601 string, got {value!r}"]
        return None
    try:
        day = parse_date(value) if len(value) == 10 else None
        moment = None if day else parse_datetime(value)
    except ValueError:
        moment = day = None
    if day is not None:
        return datetime.combine(day, time.min, tzinfo=UTC)
    if moment is None:
        errors[key] = [f"{value!r} is not an ISO-8601 date or time"]
        return None
    if timezone.is_naive(moment):
        errors[key] = [f"{value!r} has no time zone (add Z or +00:00)"]
        return None
    if (utc := in_utc(moment)) is None:
        errors[key] = [f"{value!r} is before 1970 or after 9999"]
    return utc


def _version(actor: roles.Actor, data: dict, errors: dict[str, list[str]]) -> ModelVersion | None:
    """The requested version; a model the actor may not see is as unknown as a missing one."""
    name, version = data.get("model"), data.get("version")
    if not isinstance(name, str) or not name:
        errors["model"] = ["this field is required (a model name)"]
        return None
    if reason := identifier_problem(name):
        errors["model"] = [reason]
        return None
    if version is None or version == "":
        errors["version"] = ["this field is required"]
        return None
    if not isinstance(version, str):
        errors["version"] = [f'must be a string such as "1", got {version!r}']
        return None
    if reason := identifier_problem(version):
        errors["version"] = [reason]
        return None
    try:
        get_model_for_actor(actor, name)
    except NotFound as exc:
        errors["model"] = [exc.message]
        return None
    try:
        return get_version_for_actor(actor, name, version)
    except NotFound as exc:
        errors["version"] = [exc.message]
        return None


def _notice_request(actor: roles.Actor, data: dict) -> dict[str, Any]:
    actor.require(*roles.EXPORT_NOTICES)
    errors: dict[str, list[str]] = {}
    fmt = _check_format(Report.NOTICE, data.get("format"), errors)
    decision_id = data.get("decision_id")
    decision = None
    if isinstance(decision_id, bool) or not isinstance(decision_id, int):
        errors["decision_id"] = [
            "this field is required (a decision id)"
            if decision_id is None
            else f"must be an integer, got {decision_id!r}"
        ]
    else:
        try:
            decision = get_decision_for_actor(actor, decision_id)
        except NotFound as exc:
            errors["decision_id"] = [exc.message]
    if decision is not None and decision.is_shadow:
        errors["decision_id"] = [
            f"decision {decision.pk} is a shadow decision (serving): it was never told to "
            f"anyone, so it has no notice; decision {decision.served_by} was served"
        ]
    if errors:
        raise InvalidInput("The notice request is invalid.", code="invalid", details=errors)
    shap_explanation(decision)  # 409 while the reasons are not computed
    return {
        "format": fmt,
        "parameters": {"decision_id": decision.pk},
        "registered_model": decision.registered_model,
        "model_version": decision.model_version,
        "decision": decision,
    }


def enqueue_generation(report_id: int) -> None:
    """Send the generation to the workers; if the broker is down, the resender retries.

    Sent by name (tasks.py imports this module); CELERY_TASK_ROUTES puts it on `reports`.
    """
    try:
        current_app.send_task("reports.generate", args=(report_id,))
    except Exception:  # the broker being down must not fail a committed request
        log.warning("reports.enqueue.failed report=%s", report_id, exc_info=True)


def resend_pending(older_than_seconds: int) -> int:
    """Re-send reports left pending (their message was lost or never sent)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        Report.objects.filter(status=Report.PENDING, requested_at__lt=cutoff).values_list(
            "pk", flat=True
        )[:1000]
    )
    for report_id in ids:
        enqueue_generation(report_id)
    return len(ids)


# --- generating -------------------------------------------------------------------------


def generate_report(report_id: int) -> Report:
    """Build the document, render it, store the file with its sha256; failures go on the row.

    Idempotent: a report already done is left alone, so a redelivered task is harmless.
    Transient database errors propagate so that the task retries them.
    """
    report = Report.objects.select_related(
        "registered_model", "model_version__registered_model", "decision", "requested_by"
    ).get(pk=report_id)
    if report.status == Report.DONE:
        return report
    now = timezone.now()
    Report.objects.filter(pk=report.pk).update(
        status=Report.RUNNING, progress=0, started_at=now, error=""
    )
    try:
        content, digest = _build(report)
        _store(report, content, digest)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # anything else is final: it is written on the row
        log.exception("reports.generate.failed report=%s", report.pk)
        fail_report(report.pk, exc)
    report.refresh_from_db()
    return report


def fail_report(report_id: int, exc: BaseException) -> None:
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    Report.objects.filter(pk=report_id).update(
        status=Report.FAILED, error=reason, finished_at=timezone.now()
    )


def _progress(report: Report, done: int, total: int) -> None:
    """Written at once, so the page and the API show it while the task runs."""
    percent = min(99, int(100 * done / total))
    write_now(lambda: Report.objects.filter(pk=report.pk).update(progress=percent))


def _build(report: Report) -> tuple[bytes, str]:
    if report.kind == Report.NOTICE:
        document = build_notice_document(report.decision)
        _progress(report, 1, 2)
        return _render_notice(report, document)
    params = report.parameters
    start, end = datetime.fromisoformat(params["from"]), datetime.fromisoformat(params["to"])
    steps = len(SECTION_TITLES) + 1  # every section, then rendering

    # A period's figures may lag the primary by the replica's replay delay (README:
    # Deployment); the report's own row, and its progress, are read and written on the primary.
    with from_replica():
        document = build_compliance_document(
            report.model_version,
            start,
            end,
            progress=lambda done, _: _progress(report, done, steps),
        )
    return _render_compliance(report, document)


def _render_notice(report: Report, document: dict) -> tuple[bytes, str]:
    digest = render.content_sha256(document)
    envelope = {"attest_notice": 1, "content_sha256": digest, "data": document}
    if report.format == "json":
        return render.render_json(envelope), digest
    title = f"Notice of an automated decision ({document['reference']})"
    context = {"notice": document, "content_sha256": digest}
    return render.render_pdf("reports/notice_pdf.html", context, title=title), digest


def _render_compliance(report: Report, document: dict) -> tuple[bytes, str]:
    digest = render.content_sha256(document)
    envelope = {
        "attest_report": 1,
        "kind": report.kind,
        "report_id": report.pk,
        "content_sha256": digest,
        "generated_at": canonical_time(timezone.now()),
        "generated_by": report.requested_by.get_username() if report.requested_by else None,
        "data": document,
    }
    if report.format == "json":
        return render.render_json(envelope), digest
    if report.format == "csv":
        return render.render_csv(envelope), digest
    sections = document["sections"]
    features = sections["model_identity"]["features"]
    context = {
        "envelope": envelope,
        "doc": document,
        "s": sections,
        "titles": SECTION_TITLES,
        "charts": render.compliance_charts(document),
        # Labels, not schema keys, for people; the features table maps one to the other.
        "labels": {f["feature"]: f["label"] for f in features},
        "feature_names": list(sections["drift"].get("inputs") or {}),
        "fairness_columns": 2 * len(sections["fairness"]["protected_features"]),
        # The tables per window, each run of windows without decisions (cases) in one row.
        "windows": {
            "performance": render.quiet_runs(sections["volumes"]["windows"], "decisions"),
            "drift": render.quiet_runs(sections["drift"]["windows"], "decisions"),
            "fairness": render.quiet_runs(sections["fairness"]["windows"], "decisions"),
            "queue": render.quiet_runs(
                sections["oversight"]["windows"], "opened", "resolved", "open_at_end"
            ),
        },
    }
    title = document["sections"]["cover"]["title"]
    return render.render_pdf("reports/compliance_pdf.html", context, title=title), digest


@transaction.atomic
def _store(report: Report, content: bytes, digest: str) -> None:
    """Write the file and mark the report done, if it is still running: a notice whose
    decision was erased while it was built (the erasure failed its row) keeps no file; it
    had been written after the erasure, with the person's values, and set done."""
    row = Report.objects.select_for_update().filter(pk=report.pk).first()
    if row is None or row.status != Report.RUNNING:
        return
    report.file.save(report.filename, ContentFile(content), save=False)
    Report.objects.filter(pk=report.pk).update(
        file=report.file.name,
        sha256=hashlib.sha256(content).hexdigest(),
        content_sha256=digest,
        status=Report.DONE,
        progress=100,
        finished_at=timezone.now(),
    )


# --- downloading --------------------------------------------------------------------------


def download_report(
    actor: roles.Actor, report: Report, *, ip: str | None = None, via: str = "api"
) -> bytes:
    """The stored file, checked against its recorded sha256; the download is an audit event."""
    actor.require(roles.EXPORT_REPORTS)
    if report.status != Report.DONE:
        raise Conflict(
            f"Report {report.pk} is {report.status}, not ready to download.", code="not_ready"
        )
    with report.file.open("rb") as handle:
        content = handle.read()
    if hashlib.sha256(content).hexdigest() != report.sha256:
        raise Conflict(
            f"The stored file of report {report.pk} no longer matches its recorded sha256.",
            code="file_changed",
        )
    with transaction.atomic():
        record_event(
            "report.downloaded",
            actor=actor,
            target=report,
            ip=ip,
            via=via,
            kind=report.kind,
            format=report.format,
            model=report.registered_model.name,
            version=report.model_version.version,
            sha256=report.sha256,
        )
    return content
