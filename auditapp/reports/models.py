"""Report: one requested export (a compliance report or a decision notice) and its file."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from auditapp.registry.models import ModelVersion, RegisteredModel, visible_models_q


class ReportQuerySet(models.QuerySet):
    def visible_to(self, actor) -> ReportQuerySet:
        """Reports about the models the actor may see (roles.py decides the scope)."""
        scope = visible_models_q(actor, prefix="registered_model__")
        return self.filter(scope) if scope else self


class Report(models.Model):
    COMPLIANCE, NOTICE = "model_compliance", "decision_notice"
    KINDS = [(COMPLIANCE, "compliance report"), (NOTICE, "decision notice")]
    # The formats each kind can be rendered in (API.md).
    FORMATS_BY_KIND = {COMPLIANCE: ("pdf", "csv", "json"), NOTICE: ("pdf", "json")}
    FORMATS = [("pdf", "PDF"), ("csv", "CSV"), ("json", "JSON")]
    CONTENT_TYPES = {"pdf": "application/pdf", "csv": "text/csv", "json": "application/json"}
    PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
    STATUSES = [(s, s) for s in (PENDING, RUNNING, DONE, FAILED)]

    kind = models.CharField(max_length=20, choices=KINDS)
    format = models.CharField(max_length=5, choices=FORMATS)
    # The request as validated: model, version, from, to (ISO-8601) or decision_id.
    parameters = models.JSONField()
    # Denormalised from the parameters so that scoping and listing are plain joins.
    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.PROTECT, related_name="reports"
    )
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="reports"
    )
    decision = models.ForeignKey(
        "decisions.Decision",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="notices",
    )
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    progress = models.PositiveSmallIntegerField(default=0)  # 0-100: sections done / total
    file = models.FileField(upload_to="reports/", blank=True)
    sha256 = models.CharField(max_length=64, blank=True)  # of the stored file
    content_sha256 = models.CharField(max_length=64, blank=True)  # of the data document
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = ReportQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["status", "requested_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.pk} ({self.format}, {self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.DONE, self.FAILED)

    @property
    def filename(self) -> str:
        if self.kind == self.NOTICE:
            return f"notice-{self.parameters['decision_id']}.{self.format}"
        p = self.parameters
        return (
            f"{p['model']}-v{p['version']}-compliance-{p['from'][:10]}-{p['to'][:10]}.{self.format}"
        )


class SubjectRequest(models.Model):
    """A person's request about their data (GDPR Art. 15 access, Art. 17 erasure), filed
    by a compliance officer or admin for the subject (reports/subjects.py).

    An access request's report (PDF or JSON) is built when downloaded, from the data as
    it is then, and each download is audited: no copy of the inputs is stored. An erasure
    request is answered at once: done (the declaration that erased the inputs), or
    refused with the reason (a legal hold, a retention duty, a form that cannot be
    erased), nothing erased.
    """

    ACCESS, ERASURE = "access", "erasure"
    KINDS = [(ACCESS, "access"), (ERASURE, "erasure")]
    DONE, REFUSED = "done", "refused"
    STATUSES = [(DONE, "done"), (REFUSED, "refused")]

    subject_ref = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=KINDS)
    reason = models.TextField()
    status = models.CharField(max_length=10, choices=STATUSES)
    result = models.JSONField(default=dict)  # decisions found, erased, spared; the refusal
    refusal = models.TextField(blank=True)
    erasure = models.ForeignKey(
        "decisions.Erasure", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["subject_ref"])]

    def __str__(self) -> str:
        return f"{self.kind} request {self.pk} ({self.status})"
