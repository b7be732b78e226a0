"""The decision search filters, shared by the search API and the search page."""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import django_filters
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import Exists, F, FloatField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from auditapp.accounts.audit import record_event
from auditapp.accounts.roles import VIEW_SENSITIVE, Actor
from auditapp.decisions.feature_indexes import search_expression
from auditapp.decisions.models import ARMS, Decision, Outcome
from auditapp.decisions.presenters import MASK
from auditapp.encryption import blind_token
from auditapp.errors import InvalidInput
from auditapp.filtering import (
    FloatFilter,
    MomentFilter,
    in_utc,
    refuse_control_characters,
    refuse_empty_period,
    refuse_unknown_parameters,
)
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.reviews.models import Feedback, ReviewCase
from explain.models import TopReasons

ALL_ARMS = "all"  # arm=all: shadow decisions too


class DecisionFilter(django_filters.FilterSet):
    model = django_filters.CharFilter(field_name="registered_model__name")
    version = django_filters.CharFilter(field_name="model_version__version")
    to = MomentFilter(field_name="predicted_at", lookup_expr="lt")
    prediction = django_filters.CharFilter(method="filter_prediction")
    score_min = FloatFilter(field_name="score", lookup_expr="gte")
    score_max = FloatFilter(field_name="score", lookup_expr="lte")
    subject_ref = django_filters.CharFilter(field_name="subject_ref")
    top_reason = django_filters.CharFilter(method="filter_top_reason")
    has_outcome = django_filters.ChoiceFilter(
        choices=[("true", "true"), ("false", "false")], method="filter_has_outcome"
    )
    review = django_filters.ChoiceFilter(
        choices=[("open", "open"), ("resolved", "resolved")], method="filter_review"
    )
    feedback = django_filters.ChoiceFilter(
        choices=[(v, v) for v in ("none", "agree", "disagree", "unsure")],
        method="filter_feedback",
    )
    # The arm a served decision came from; without it, every decision but shadow ones
    # (never told to anyone: filter_decisions applies that default); "all" includes them.
    arm = django_filters.ChoiceFilter(
        choices=[(v, v) for v in (*ARMS, ALL_ARMS)], method="filter_arm"
    )

    class Meta:
        model = Decision
        fields: list[str] = []

    _form_class: type | None = None

    def get_form_class(self):
        """The form class, built once: django-filter builds a new one for every search
        (about half a millisecond). The form's fields are copied for each form anyway."""
        if DecisionFilter._form_class is None:
            DecisionFilter._form_class = super().get_form_class()
        return DecisionFilter._form_class

    def filter_prediction(self, queryset, name, value):
        """The predicted class, as text: "1" finds the class 1 of a model whose classes
        are integers (a query string has no types) as well as a class "1"."""
        matches = Q(prediction=value)
        if re.fullmatch(r"-?[1-9][0-9]{0,17}|0", value):  # as an integer is written
            matches |= Q(prediction=int(value))
        return queryset.filter(matches)

    def filter_review(self, queryset, name, value):
        """open: a case awaits review; resolved: reviewed, nothing open."""
        cases = ReviewCase.objects.filter(decision=OuterRef("pk"))
        unresolved = Exists(cases.unresolved())
        if value == "open":
            return queryset.filter(unresolved)
        return queryset.filter(Exists(cases.filter(state=ReviewCase.RESOLVED)), ~unresolved)

    def filter_has_outcome(self, queryset, name, value):
        outcomes = Exists(Outcome.objects.filter(decision=OuterRef("pk")))
        return queryset.filter(outcomes if value == "true" else ~outcomes)

    def filter_feedback(self, queryset, name, value):
        """By the latest verdict given on the decision ("none": no feedback yet)."""
        given = Feedback.objects.filter(decision=OuterRef("pk"))
        if value == "none":
            return queryset.filter(~Exists(given))
        latest = Subquery(given.order_by("-created_at", "-pk").values("verdict")[:1])
        return queryset.annotate(latest_verdict=latest).filter(latest_verdict=value)

    def filter_arm(self, queryset, name, value):
        return queryset if value == ALL_ARMS else queryset.filter(arm=value)

    def filter_top_reason(self, queryset, name, value):
        """Validated here; applied after every other filter (filter_decisions_and_reason),
        so that a page of it can be read in the reasons' own order (ReasonFilter)."""
        return queryset


# "from" is a Python keyword, so it is added after the class body.
DecisionFilter.base_filters["from"] = MomentFilter(field_name="predicted_at", lookup_expr="gte")


def filter_decisions(queryset: QuerySet, params, actor: Actor) -> QuerySet:
    """Apply the search parameters, or raise InvalidInput naming the bad ones.

    Raises PermissionDenied (403, audited) for a filter on a feature the actor
    may not see: its yes/no answer would disclose the value.
    """
    return every_match(*filter_decisions_and_reason(queryset, params, actor))


def every_match(queryset: QuerySet, reason: ReasonFilter | None) -> QuerySet:
    """The search's decisions with its top reason applied, if any: for a count, an export."""
    return reason.apply(queryset) if reason else queryset


def filter_decisions_and_reason(
    queryset: QuerySet, params, actor: Actor
) -> tuple[QuerySet, ReasonFilter | None]:
    """filter_decisions with the top reason apart: (every other filter applied, the reason).
    keyset_page reads a page of the reason in its own index order."""
    refuse_control_characters(params)
    refuse_unknown_parameters(params, SEARCH_PARAMETER_NAMES)
    filterset = DecisionFilter(params, queryset=queryset)
    if not filterset.is_valid():
        raise InvalidInput(
            "Some search parameters are invalid.",
            code="invalid_parameters",
            details={name: [str(e) for e in errs] for name, errs in filterset.errors.items()},
        )
    _refuse_swapped_ends(filterset.form.cleaned_data)
    reason = params.get("top_reason")
    if reason and not actor.can(VIEW_SENSITIVE) and reason in sensitive_anywhere(actor):
        raise PermissionDenied(
            f"Your role may not see {reason}, so it may not search by it ({VIEW_SENSITIVE})."
        )
    queryset = filterset.qs if params.get("arm") else filterset.qs.served()
    cleaned = filterset.form.cleaned_data
    feature = cleaned.get("top_reason")
    by_reason = ReasonFilter(feature, cleaned.get("from"), cleaned.get("to")) if feature else None
    return filter_features(queryset, params, actor), by_reason


@dataclass(frozen=True)
class ReasonFilter:
    """top_reason: the decisions whose newest SHAP result ranks `feature` among its top
    three (explain.models.TopReasons), within the search's period.

    The reasons of each place are indexed in the page's order (time, then id). A page in
    time order reads the first matches of each place beyond the cursor and looks only
    at those decisions (first_ids), so that a reason few decisions have costs a page's
    rows, not a probe of each of its matches; when the other filters leave too few of
    them for a page, it reads more, then falls back to every match (apply).
    """

    feature: str
    start: datetime | None
    end: datetime | None

    def _period(self, reasons: QuerySet) -> QuerySet:
        if self.start is not None:
            reasons = reasons.filter(predicted_at__gte=self.start)
        if self.end is not None:
            reasons = reasons.filter(predicted_at__lt=self.end)
        return reasons

    def apply(self, queryset: QuerySet) -> QuerySet:
        """Every decision of the reason: for an export, a count, another order."""
        value = self.feature
        places = Q(first=value) | Q(second=value) | Q(third=value)
        reasons = self._period(TopReasons.objects.filter(places))
        return queryset.filter(pk__in=reasons.values("decision_id"))

    def first_ids(
        self, count: int, descending: bool, beyond: tuple[datetime, int] | None
    ) -> list[int]:
        """The ids of the first `count` decisions of the reason in time order (then id),
        after the cursor's (time, id): the first `count` of each place, merged."""
        sign = "-" if descending else ""
        found: list[tuple[datetime, int]] = []
        for place in TopReasons.PLACES:
            reasons = self._period(TopReasons.objects.filter(**{place: self.feature}))
            if beyond is not None:
                moment, pk = beyond
                after = "lt" if descending else "gt"
                reasons = reasons.filter(
                    Q(**{f"predicted_at__{after}": moment})
                    | Q(predicted_at=moment, **{f"decision_id__{after}": pk})
                )
            ordered = reasons.order_by(f"{sign}predicted_at", f"{sign}decision_id")
            found += ordered.values_list("predicted_at", "decision_id")[:count]
        found.sort(reverse=descending)
        return [pk for _, pk in found[:count]]


# What a search reads besides its filters: the page's order, position and size (keyset_page).
PAGING_PARAMETERS = ("ordering", "cursor", "limit")
SEARCH_PARAMETER_NAMES = (*DecisionFilter.base_filters, *PAGING_PARAMETERS, "feature.<name>")


def _refuse_swapped_ends(cleaned: dict) -> None:
    """A range whose ends are swapped is an error, not an empty answer: it is a mistake."""
    refuse_empty_period(cleaned.get("from"), cleaned.get("to"))
    if _swapped(cleaned.get("score_min"), cleaned.get("score_max")):
        _refuse_range("score_min", "score_min must not be above score_max")


def refuse_values_the_model_cannot_have(params, actor: Actor) -> None:
    """The API's search: a class, top reason or category the named model cannot have is a
    mistake (a misspelt "incme"), not an empty answer. Only a model the actor sees says so: for a
    hidden one, as for a missing one, the search finds nothing and tells nothing of its
    schema. (The page instead shows such a value as "(not of this model)" in its form.)"""
    prediction, reason = params.get("prediction"), params.get("top_reason")
    exact = {
        key: params[key]
        for key in params
        if (match := FEATURE_PARAM.match(key)) and match.group(2) is None and params[key]
    }
    if not (prediction or reason or exact) or not params.get("model"):
        return
    schema = search_schema(actor, params["model"])
    if schema is None:
        return
    problems = {}
    for key, value in exact.items():
        name = key.removeprefix("feature.")
        if name in schema.categories and value not in schema.categories[name]:
            known = ", ".join(repr(c) for c in sorted(schema.categories[name]))
            problems[key] = [f"{value!r} is not a category of {name} ({known})"]
    if reason and reason not in schema.features:
        problems["top_reason"] = [f"{reason!r} is not a feature of this model"]
    if prediction and schema.classes is not None and prediction not in schema.classes:
        classes = ", ".join(repr(c) for c in sorted(schema.classes))
        problems["prediction"] = [f"{prediction!r} is not a class of this model ({classes})"]
    if problems:
        raise InvalidInput(
            "Some search parameters are invalid.", code="invalid_parameters", details=problems
        )


def _swapped(low, high, *, strict: bool = False) -> bool:
    if low is None or high is None:
        return False
    return low >= high if strict else low > high


def _refuse_range(key: str, message: str) -> None:
    raise InvalidInput(
        "Some search parameters are invalid.", code="invalid_parameters", details={key: [message]}
    )


def sensitive_anywhere(actor: Actor) -> frozenset[str]:
    """Features that some version of a model the actor sees marks sensitive."""
    versions = ModelVersion.objects.filter(
        registered_model__in=RegisteredModel.objects.visible_to(actor)
    ).only("schema")
    return frozenset().union(*(version.parsed_schema.sensitive_names for version in versions))


# Feature filters: feature.<name>=value (exact), feature.<name>__gte / __lte. No other
# lookup exists: __regex, __startswith, __in... would be new ways to probe a value.
FEATURE_PARAM = re.compile(r"^feature\.([A-Za-z0-9]+(?:_[A-Za-z0-9]+)*_?)(?:__(gte|lte))?$")
FEATURE_FILTER_HELP = "use feature.<name>, feature.<name>__gte or feature.<name>__lte"


@dataclass(frozen=True)
class SearchSchema:
    """What the feature filters of one model need: each feature's type, and which are sensitive."""

    types: dict[str, str]
    sensitive: frozenset[str]
    model_id: int
    features: frozenset[str] = frozenset()  # of every version: what a top reason can be
    classes: frozenset[str] | None = None  # of every version, as text; None: not all classify
    categories: dict[str, frozenset[str]] = field(default_factory=dict)  # of every version


def search_schema(actor: Actor, model_name: str | None) -> SearchSchema | None:
    """The model's features as the newest version defines them; None if the actor cannot see it."""
    if not model_name:
        return None
    visible = RegisteredModel.objects.visible_to(actor)
    return _schema_of(ModelVersion.objects.filter(registered_model__in=visible), model_name)


def _schema_of(versions: QuerySet, model_name: str) -> SearchSchema | None:
    """A feature counts as sensitive if any version marks it so."""
    found = list(
        versions.filter(registered_model__name=model_name)
        .order_by("-created_at")
        .only("schema", "registered_model_id")
    )
    if not found:
        return None
    schemas = [version.parsed_schema for version in found]
    classify = all(schema.target.type == "classification" for schema in schemas)
    categories: dict[str, set[str]] = {}
    for schema in schemas:
        for feature in schema.features:
            if feature.type == "categorical":
                categories.setdefault(feature.name, set()).update(feature.categories)
    return SearchSchema(
        types={f.name: f.type for f in schemas[0].features},
        sensitive=frozenset().union(*(schema.sensitive_names for schema in schemas)),
        model_id=found[0].registered_model_id,
        features=frozenset(name for schema in schemas for name in schema.names),
        classes=(
            frozenset(str(c) for schema in schemas for c in schema.target.classes)
            if classify
            else None
        ),
        categories={name: frozenset(values) for name, values in categories.items()},
    )


def split_sensitive_filters(params) -> tuple[dict, dict]:
    """A search's filters as the audit log keeps them: (shown, withheld).

    The values of filters on a sensitive feature are withheld (the log commits to
    them), whoever searched: the log's readers include roles that may not see them.
    """
    filters = {k: v for k, v in params.items() if k != "cursor"}
    model_name = filters.get("model")
    features_filtered = any(FEATURE_PARAM.match(key) for key in filters)
    schema = (
        _schema_of(ModelVersion.objects.all(), model_name)
        if model_name and features_filtered
        else None
    )
    sensitive = schema.sensitive if schema else frozenset()
    withheld = {}
    for key in filters:
        match = FEATURE_PARAM.match(key)
        if match and match.group(1) in sensitive:
            withheld[key] = filters[key]
    return {k: (MASK if k in withheld else v) for k, v in filters.items()}, withheld


def _typed(raw: str, kind: str, bounded: bool):
    """A query-string value as the JSON value it stands for, by the feature's type."""
    if bounded and kind not in ("numeric", "integer"):
        raise ValueError(f"__gte and __lte compare numbers; this feature is {kind}")
    if kind == "categorical":
        return raw
    if kind == "boolean":
        if raw.lower() not in ("true", "false"):
            raise ValueError("must be true or false")
        return raw.lower() == "true"
    try:
        number = float(raw)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def filter_features(queryset: QuerySet, params, actor: Actor) -> QuerySet:
    wanted = [key for key in params if key.startswith("feature.") and params.get(key, "") != ""]
    if not wanted:
        return queryset
    problems: dict[str, list[str]] = {}
    parsed = []
    for key in wanted:
        match = FEATURE_PARAM.match(key)
        if match is None:
            problems[key] = [FEATURE_FILTER_HELP]
        else:
            parsed.append((key, *match.groups()))
    if not params.get("model"):
        for key, _, _ in parsed:
            problems[key] = ["feature filters need model=<name>: the model defines its features"]
    if problems:
        raise InvalidInput(
            "Some feature filters are invalid.", code="invalid_parameters", details=problems
        )
    schema = search_schema(actor, params.get("model"))
    if schema is None:  # no such model, or one the actor may not see: alike, nothing found
        return queryset.none()
    hidden = sorted(
        {name for _, name, _ in parsed if name in schema.sensitive}
        if not actor.can(VIEW_SENSITIVE)
        else set()
    )
    if hidden:
        raise PermissionDenied(
            f"Your role may not see {', '.join(hidden)}, so it may not filter on "
            f"{'it' if len(hidden) == 1 else 'them'} ({VIEW_SENSITIVE})."
        )
    bounds: dict[str, dict[str, tuple[str, Any]]] = {}  # feature -> gte / lte -> (key, value)
    for key, name, bound in parsed:
        if name not in schema.types:
            problems[key] = [f"{name!r} is not a feature of this model"]
            continue
        try:
            value = _typed(params.get(key, ""), schema.types[name], bound is not None)
        except ValueError as exc:
            problems[key] = [str(exc)]
            continue
        if name in schema.sensitive:
            queryset = _sensitive_filter(queryset, key, name, bound, value, problems)
            continue
        if bound is not None:
            bounds.setdefault(name, {})[bound] = (key, value)
        expression = search_expression(name, schema.types[name])
        if expression is None:
            lookup = f"inputs__{name}" + (f"__{bound}" if bound else "")
            queryset = queryset.filter(**{lookup: value})
        else:  # compared as the feature index holds it (decisions/feature_indexes.py)
            alias = f"feature_value_{len(queryset.query.annotations)}"
            queryset = queryset.alias(**{alias: expression})
            queryset = queryset.filter(**{f"{alias}__{bound or 'exact'}": float(value)})
    for name, ends in bounds.items():
        if "gte" in ends and "lte" in ends and _swapped(ends["gte"][1], ends["lte"][1]):
            problems[ends["gte"][0]] = [f"feature.{name}__gte must not be above __lte"]
    if problems:
        raise InvalidInput(
            "Some feature filters are invalid.", code="invalid_parameters", details=problems
        )
    # The model by id as well as by name: feature indexes are partial on the id
    # (decisions/feature_indexes.py), and PostgreSQL uses one only when it sees it.
    return queryset.filter(registered_model_id=schema.model_id)


SENSITIVE_RANGE = (
    "a sensitive feature is stored encrypted: it can be searched for an exact value only "
    "(its blind index), not compared with __gte or __lte"
)


def _sensitive_filter(queryset, key, name, bound, value, problems) -> QuerySet:
    """An exact match on a sensitive value, through its blind index (auditapp/encryption.py):
    the keyed token of the value, never the value, is compared. A range cannot be: refused.
    Decisions recorded before encryption at rest are found once rotate_data_keys sealed them."""
    if bound is not None:
        problems[key] = [SENSITIVE_RANGE]
        return queryset
    token = blind_token(name, value)
    if connection.vendor == "postgresql":  # @>, which the GIN index answers
        return queryset.filter(sensitive_tokens__contains={name: token})
    return queryset.filter(**{f"sensitive_tokens__{name}": token})


# Keyset pagination: stable under concurrent inserts, and as fast on the last
# page as on the first. The cursor is the sort key and id of the last row.
ORDERINGS = {
    "-predicted_at": ("predicted_at", True),
    "predicted_at": ("predicted_at", False),
    "-score": ("score", True),
    "score": ("score", False),
}


def _encode_cursor(value, pk: int) -> str:
    raw = json.dumps([value.isoformat() if isinstance(value, datetime) else value, pk])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, field: str):
    try:
        value, pk = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        # A cursor comes from the client: its value must have the sort key's type,
        # or the database would be asked to compare a score with a word.
        if field == "predicted_at":
            value = in_utc(datetime.fromisoformat(value))  # we issue UTC; any offset reads
            if value is None:
                raise ValueError("outside the years UTC holds")
        else:
            value = float(value)
        return value, int(pk)
    except (ValueError, TypeError):
        raise InvalidInput.named(
            "cursor", "is not valid; use the `next` value of a previous page"
        ) from None


def in_order(queryset: QuerySet, ordering: str | None) -> tuple[QuerySet, str, bool]:
    """The search in ?ordering= (newest first by default), by its `sort_key` and then id:
    (queryset, field, descending). The page (keyset_page) and its CSV export share it."""
    if (ordering or "-predicted_at") not in ORDERINGS:
        raise InvalidInput.named("ordering", f"must be one of {list(ORDERINGS)}")
    field, descending = ORDERINGS[ordering or "-predicted_at"]
    # Decisions without a score sort as -1, so ordering by score keeps them.
    key = (
        Coalesce("score", Value(-1.0), output_field=FloatField()) if field == "score" else F(field)
    )
    sign = "-" if descending else ""
    ordered = queryset.annotate(sort_key=key).order_by(f"{sign}sort_key", f"{sign}pk")
    return ordered, field, descending


# A page of a top reason in time order first looks at this many of the reason's first
# matches per row of the page, then at this many, then at all (ReasonFilter).
REASON_CANDIDATES = (4, 16)


def keyset_page(
    queryset: QuerySet,
    ordering: str | None,
    cursor: str | None,
    limit: int,
    reason: ReasonFilter | None = None,
) -> tuple[list, str | None]:
    """One page of results (Decisions, or rows of a .values() query with its "id") and the
    cursor of the next page (None on the last). `reason`: the top reason left out of
    `queryset` by filter_decisions_and_reason."""
    queryset, field, descending = in_order(queryset, ordering)
    beyond = None
    if cursor:
        value, pk = beyond = _decode_cursor(cursor, field)
        after = "lt" if descending else "gt"
        queryset = queryset.filter(
            Q(**{f"sort_key__{after}": value}) | Q(sort_key=value, **{f"pk__{after}": pk})
        )
    rows = _first_rows(queryset, limit + 1, reason, field, descending, beyond)
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    if isinstance(last, dict):  # a page of .values() rows
        return rows[:limit], _encode_cursor(last["sort_key"], last["id"])
    return rows[:limit], _encode_cursor(last.sort_key, last.pk)


def _first_rows(
    queryset: QuerySet,
    count: int,
    reason: ReasonFilter | None,
    field: str,
    descending: bool,
    beyond: tuple[Any, int] | None,
) -> list:
    """The first `count` rows of the page. With a reason in time order, among its first
    matches: if those leave `count` rows, no later match can come before them."""
    if reason is None:
        return list(queryset[:count])
    if field == "predicted_at":
        for per_row in REASON_CANDIDATES:
            ids = reason.first_ids(per_row * count, descending, beyond)
            rows = list(queryset.filter(pk__in=ids)[:count])
            if len(rows) == count or len(ids) < per_row * count:  # full, or every match seen
                return rows
    return list(reason.apply(queryset)[:count])


def note_search(actor: Actor, params, *, ip=None, via: str = "page") -> None:
    """Searches are reads of many decisions: logged with their filters (not the cursor)."""
    filters, withheld = split_sensitive_filters(params)
    record_event(
        "decisions.searched",
        actor=actor,
        ip=ip,
        params=filters,
        via=via,
        sensitive_details={"params": withheld} if withheld else None,
    )
