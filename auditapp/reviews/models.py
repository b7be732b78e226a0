"""Human oversight records: a domain expert's verdict on a decision and its explanation."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from auditapp.appendonly import AppendOnlyModel


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
