"""What needs the signed-in person today, per model they may see: open alerts, the review
backlog and its age, explanations waiting or failed, today's decisions, and the chain's
last verification. One grouped query a figure, whatever the number of models."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Min
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.decisions import tallies
from auditapp.decisions.models import VerificationJob
from auditapp.monitoring.models import Alert
from auditapp.registry.models import RegisteredModel
from auditapp.reviews.models import ReviewCase
from explain.models import Explanation


@dataclass
class ModelNeeds:
    name: str
    task: str
    decisions_today: int = 0
    open_alerts: int = 0
    backlog: int = 0
    oldest_case: datetime | None = None
    explanations_waiting: int = 0
    explanations_failed: int = 0

    @property
    def backlog_age(self) -> timedelta | None:
        return timezone.now() - self.oldest_case if self.oldest_case else None

    @property
    def needs_attention(self) -> bool:
        return bool(self.open_alerts or self.backlog or self.explanations_failed)


@dataclass
class Overview:
    models: list[ModelNeeds] = field(default_factory=list)
    # The newest finished verification of the whole log, for those who may verify it.
    verification: VerificationJob | None = None
    can_verify: bool = False


def start_of_today() -> datetime:
    return timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)


def _by_model(queryset, model_field: str, **figures) -> dict[int, dict]:
    rows = queryset.order_by().values(model_field).annotate(**figures)
    return {row[model_field]: row for row in rows}


def overview_for(actor: roles.Actor) -> Overview:
    """Each figure only for who may read it; a model the actor may not see is not counted."""
    result = Overview(can_verify=actor.can(roles.VERIFY_CHAIN))
    if result.can_verify:
        result.verification = (
            VerificationJob.objects.filter(
                status__in=[VerificationJob.DONE, VerificationJob.FAILED]
            )
            .order_by("-finished_at", "-pk")
            .first()
        )
    if not actor.can(roles.READ_MODELS):
        return result
    models = list(RegisteredModel.objects.visible_to(actor).order_by("name"))
    result.models = [ModelNeeds(name=m.name, task=m.task) for m in models]
    if not actor.can(roles.READ_DECISIONS):
        return result
    by_id = {m.pk: needs for m, needs in zip(models, result.models, strict=True)}
    ids = list(by_id)
    today = tallies.served_since(ids, start_of_today().date())
    alerts = _by_model(
        Alert.objects.active().filter(model_version__registered_model__in=ids),
        "model_version__registered_model",
        n=Count("id"),
    )
    cases = _by_model(
        ReviewCase.objects.unresolved().filter(decision__registered_model__in=ids),
        "decision__registered_model",
        n=Count("id"),
        oldest=Min("opened_at"),
    )
    work = Explanation.objects.filter(decision__registered_model__in=ids)
    waiting = _by_model(
        work.filter(status__in=[Explanation.PENDING, Explanation.RUNNING]),
        "decision__registered_model",
        n=Count("id"),
    )
    failed = _by_model(
        work.filter(status=Explanation.FAILED), "decision__registered_model", n=Count("id")
    )
    for model_id, needs in by_id.items():
        needs.decisions_today = today.get(model_id, 0)
        needs.open_alerts = alerts.get(model_id, {}).get("n", 0)
        needs.backlog = cases.get(model_id, {}).get("n", 0)
        needs.oldest_case = cases.get(model_id, {}).get("oldest")
        needs.explanations_waiting = waiting.get(model_id, {}).get("n", 0)
        needs.explanations_failed = failed.get(model_id, {}).get("n", 0)
    return result
