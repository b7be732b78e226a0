"""Reading the access log: filters shared by the page, the CSV export and the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import django_filters
from django.db.models import QuerySet

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.accounts.models import AuditEvent
from auditapp.errors import InvalidInput, NotFound
from auditapp.filtering import MomentFilter, refuse_control_characters, refuse_empty_period
from auditapp.hashing import canonical_json, canonical_time

CSV_COLUMNS = (
    "id",
    "at",
    "actor",
    "action",
    "object_type",
    "object_id",
    "ip",
    "details",
    "sensitive_details",
    "content_hash",
    # The event as a sentence (event_sentences.py), plain text; last, so that the
    # columns before it keep their places for the clients that read them.
    "summary",
)
EXPORT_LIMIT = 1_000_000
SUMMARY_BATCH = 5000


class AuditEventFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor_name", help_text="user name (exact)")
    action = django_filters.CharFilter(
        method="filter_action", help_text="an action (auth.login) or a prefix (decision.)"
    )
    object_type = django_filters.CharFilter(field_name="object_type")
    object_id = django_filters.CharFilter(field_name="object_id")
    to = MomentFilter(field_name="at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields: list[str] = []

    def filter_action(self, queryset, name, value):
        if value.endswith("."):
            return queryset.filter(action__startswith=value)
        return queryset.filter(action=value)


# "from" is a Python keyword, so it is added after the class body.
AuditEventFilter.base_filters["from"] = MomentFilter(field_name="at", lookup_expr="gte")

FILTERS = ("actor", "action", "object_type", "object_id", "from", "to")


def visible_events(actor: roles.Actor) -> QuerySet:
    """An actor limited to some models (a token's --models) reads only their events."""
    events = AuditEvent.objects.all()
    scope = actor.model_scope
    if scope.names is not None:
        events = events.filter(model__in=scope.names)
    if not scope.all_models:
        events = events.filter(model__in=actor.user.assigned_models.values("name"))
    return events


def get_event_for_actor(actor: roles.Actor, event_id: int) -> AuditEvent:
    """One event the actor may read; one they may not see answers as a missing one (404)."""
    actor.require(roles.READ_AUDIT)
    event = visible_events(actor).filter(pk=event_id).first()
    if event is None:
        raise NotFound("No such audit event.")  # the same words whether missing or hidden
    return event


def search_events(actor: roles.Actor, params) -> QuerySet:
    """The events matching the filters, newest first; raises InvalidInput naming bad filters."""
    actor.require(roles.READ_AUDIT)
    refuse_control_characters(params)
    filterset = AuditEventFilter(params, queryset=visible_events(actor))
    if not filterset.is_valid():
        raise InvalidInput(
            "Some access-log filters are invalid.",
            code="invalid_parameters",
            details={name: [str(e) for e in errs] for name, errs in filterset.errors.items()},
        )
    refuse_empty_period(
        filterset.form.cleaned_data.get("from"), filterset.form.cleaned_data.get("to")
    )
    return filterset.qs.order_by("-id")


def note_read(actor: roles.Actor, params, *, ip=None, via: str, exported: bool = False) -> None:
    """Reading the access log is itself recorded, with the filters used."""
    filters = {name: params[name] for name in FILTERS if params.get(name)}
    action = "audit_log.exported" if exported else "audit_log.viewed"
    record_event(action, actor=actor, ip=ip, via=via, params=filters)


def event_row(event: AuditEvent, show_sensitive: bool) -> dict:
    """An event as readers see it; its sensitive part only to those with view_sensitive."""
    sensitive = None
    if event.salt is not None:
        sensitive = {"commitment": event.sensitive_commitment()}
        if show_sensitive:
            sensitive.update(values=event.sensitive_details, salt=bytes(event.salt).hex())
    return {
        "id": event.pk,
        "at": canonical_time(event.at),
        "actor": event.actor_name,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "ip": event.ip,
        "details": event.details,
        "sensitive_details": sensitive,
        "content_hash": event.content_hash,
    }


def csv_rows(
    queryset: QuerySet,
    show_sensitive: bool,
    summaries: Callable[[Sequence[AuditEvent]], list[str]] | None = None,
) -> Iterator[list]:
    """The CSV's rows; `summaries` words a batch of events at a time (blank without it)."""
    batch: list[AuditEvent] = []
    for event in queryset[:EXPORT_LIMIT].iterator(chunk_size=SUMMARY_BATCH):
        batch.append(event)
        if len(batch) == SUMMARY_BATCH:
            yield from _csv_batch(batch, show_sensitive, summaries)
            batch = []
    yield from _csv_batch(batch, show_sensitive, summaries)


def _csv_batch(events: list[AuditEvent], show_sensitive: bool, summaries) -> Iterator[list]:
    words = summaries(events) if summaries and events else [""] * len(events)
    for event, summary in zip(events, words, strict=True):
        row = event_row(event, show_sensitive)
        row["details"] = canonical_json(row["details"])
        row["sensitive_details"] = (
            canonical_json(row["sensitive_details"]) if row["sensitive_details"] else ""
        )
        row["summary"] = summary
        yield [row[name] for name in CSV_COLUMNS]
