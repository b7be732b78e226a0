"""How much of its window a snapshot covers: a window is partial when the version's first
decision came after the window began (a version put live at 14:02 has a first day of a
few dozen decisions), or when it was computed before the window ended.

Read from what is stored (the version's first decision, the snapshot's computed_at), so
every snapshot ever computed is marked, and the pages and the API say the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import OuterRef, Subquery

from auditapp.decisions.models import Decision
from auditapp.monitoring.models import MetricSnapshot

DAY = timedelta(days=1)


def first_decision_query() -> Subquery:
    """The predicted_at of a version's first decision, as a subquery on ModelVersion
    (the index on (model_version, predicted_at) answers it)."""
    return Subquery(
        Decision.objects.filter(model_version=OuterRef("pk"))
        .order_by("predicted_at")
        .values("predicted_at")[:1]
    )


def first_decision_at(model_version) -> datetime | None:
    return (
        Decision.objects.filter(model_version=model_version)
        .order_by("predicted_at")
        .values_list("predicted_at", flat=True)
        .first()
    )


@dataclass(frozen=True)
class Coverage:
    """The part [start, end) of the window [window_start, window_end) the figures cover."""

    window_start: datetime
    window_end: datetime
    start: datetime
    end: datetime
    decisions: int

    @property
    def late_start(self) -> bool:
        return self.start > self.window_start

    @property
    def early_end(self) -> bool:
        return self.end < self.window_end

    @property
    def partial(self) -> bool:
        return self.late_start or self.early_end

    def _moment(self, moment: datetime) -> str:
        short = self.window_end - self.window_start <= DAY
        return moment.strftime("%H:%M" if short else "%Y-%m-%d %H:%M")

    @property
    def text(self) -> str:
        """The pill: "partial: 39 decisions from 14:02" (times UTC, as on every page)."""
        noun = "decision" if self.decisions == 1 else "decisions"
        text = f"partial: {self.decisions} {noun}"
        if self.late_start:
            text += f" from {self._moment(self.start)}"
            if self.early_end:
                text += f" to {self._moment(self.end)}"
        elif self.early_end:
            text += f" up to {self._moment(self.end)}"
        return text

    @property
    def explanation(self) -> str:
        """Why, in a sentence (the pill's title)."""
        reasons = []
        if self.late_start:
            reasons.append(
                f"the version's first decision came at {self.start:%Y-%m-%d %H:%M} UTC, "
                f"after the window began ({self.window_start:%Y-%m-%d %H:%M} UTC)"
            )
        if self.early_end:
            reasons.append(
                f"it was computed at {self.end:%Y-%m-%d %H:%M} UTC, before the window ended "
                f"({self.window_end:%Y-%m-%d %H:%M} UTC)"
            )
        return "Only part of the window: " + "; ".join(reasons) + "."

    def as_json(self) -> dict:
        """The API's `coverage` of a snapshot."""
        return {
            "partial": self.partial,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
        }


def coverage(snapshot: MetricSnapshot, first_decision: datetime | None) -> Coverage | None:
    """What a computed snapshot covers; None until it is computed."""
    if snapshot.status != MetricSnapshot.DONE:
        return None
    start, end = snapshot.window_start, snapshot.window_end
    if first_decision is not None and start < first_decision < end:
        start = first_decision
    computed = snapshot.computed_at
    if computed is not None and computed < end:
        end = max(computed, start)
    return Coverage(snapshot.window_start, snapshot.window_end, start, end, snapshot.decisions)
