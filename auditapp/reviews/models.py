"""Human oversight records: a domain expert's verdict on a decision and its explanation."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from auditapp.appendonly import AppendOnlyModel
from auditapp.registry.models import visible_models_q
from auditapp.reviews.rules import RULE_LABELS, severity


class Feedback(AppendOnlyModel):
    """One verdict. Append-only: changing one's mind is a new entry (history kept)."""

    AGREE, DISAGREE, UNSURE = "agree", "disagree", "unsure"
    VERDICTS = [(AGREE, "agree"), (DISAGREE, "disagree"), (UNSURE, "unsure")]

    decision = models.ForeignKey(
        "decisions.Decision", on_delete=models.PROTECT, related_name="feedback"
    )
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=10, choices=VERDICTS)
    corrected_label = models.JSONField(null=True, blank=True)
    explanation_rating = models.PositiveSmallIntegerField(null=True, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["decision", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.verdict} on decision {self.decision_id} by {self.author}"


class ReviewCaseQuerySet(models.QuerySet):
    def visible_to(self, actor):

        scope = visible_models_q(actor, prefix="decision__registered_model__")
        return self.filter(scope) if scope else self

    def unresolved(self):
        return self.exclude(state=ReviewCase.RESOLVED)


class ReviewCase(models.Model):
    """A decision put in front of a domain expert, by a rule or by hand."""

    OPEN, IN_REVIEW, RESOLVED = "open", "in_review", "resolved"
    STATES = [(OPEN, "open"), (IN_REVIEW, "in review"), (RESOLVED, "resolved")]
    CONFIRMED, OVERRIDDEN = "confirmed", "overridden"
    RESOLUTIONS = [(CONFIRMED, "confirmed"), (OVERRIDDEN, "overridden")]

    decision = models.ForeignKey(
        "decisions.Decision", on_delete=models.PROTECT, related_name="review_cases"
    )
    state = models.CharField(max_length=10, choices=STATES, default=OPEN)
    reasons = models.JSONField(default=list)  # [{"rule": ..., "detail": ...}]
    # rules.severity(reasons), kept with them: the queue orders by it in the database.
    severity = models.PositiveSmallIntegerField(default=0)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    opened_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=10, choices=RESOLUTIONS, blank=True)

    objects = ReviewCaseQuerySet.as_manager()

    class Meta:
        ordering = ["opened_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["decision"],
                condition=~models.Q(state="resolved"),
                name="one_unresolved_case_per_decision",
            )
        ]

    def __str__(self) -> str:
        return f"case {self.pk} on decision {self.decision_id} ({self.state})"

    def reason_texts(self) -> list[tuple[str, str]]:
        """(plain label, detail) for each reason, for people to read."""

        return [(RULE_LABELS.get(r["rule"], r["rule"]), r.get("detail", "")) for r in self.reasons]

    def set_reasons(self, reasons: list[dict]) -> None:
        self.reasons, self.severity = reasons, severity(reasons)


class CaseEvent(AppendOnlyModel):
    """The history of a case: opened, reasons added, taken, resolved. Append-only."""

    case = models.ForeignKey(ReviewCase, on_delete=models.PROTECT, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=20)
    details = models.JSONField(default=dict)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.action} on case {self.case_id}"


class Override(AppendOnlyModel):
    """A human decision replacing the model's: a new record, the decision is never edited."""

    decision = models.ForeignKey(
        "decisions.Decision", on_delete=models.PROTECT, related_name="overrides"
    )
    case = models.ForeignKey(ReviewCase, on_delete=models.PROTECT, related_name="overrides")
    outcome = models.JSONField()
    rationale = models.TextField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"override of decision {self.decision_id}: {self.outcome!r}"
