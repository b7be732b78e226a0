"""The decision search filters, shared by the search API and the search page."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime

import django_filters
from django.db.models import Exists, F, FloatField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from auditapp.decisions.models import Decision, Outcome
from auditapp.errors import InvalidInput
from auditapp.registry.models import ModelVersion
from auditapp.reviews.models import Feedback, ReviewCase
from explain.models import Explanation

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class DecisionFilter(django_filters.FilterSet):
    model = django_filters.CharFilter(field_name="registered_model__name")
    version = django_filters.CharFilter(field_name="model_version__version")
    to = django_filters.IsoDateTimeFilter(field_name="predicted_at", lookup_expr="lt")
    prediction = django_filters.CharFilter(field_name="prediction")
    score_min = django_filters.NumberFilter(field_name="score", lookup_expr="gte")
    score_max = django_filters.NumberFilter(field_name="score", lookup_expr="lte")
    subject_ref = django_filters.CharFilter(field_name="subject_ref")
    top_reason = django_filters.CharFilter(method="filter_top_reason")
    has_outcome = django_filters.BooleanFilter(method="filter_has_outcome")
    review = django_filters.ChoiceFilter(
        choices=[("open", "open"), ("resolved", "resolved")], method="filter_review"
    )
    feedback = django_filters.ChoiceFilter(
        choices=[(v, v) for v in ("none", "agree", "disagree", "unsure")],
        method="filter_feedback",
    )

    class Meta:
        model = Decision
        fields: list[str] = []

    def filter_review(self, queryset, name, value):
        """open: a case awaits review; resolved: reviewed, nothing open."""
        cases = ReviewCase.objects.filter(decision=OuterRef("pk"))
        unresolved = Exists(cases.unresolved())
        if value == "open":
            return queryset.filter(unresolved)
        return queryset.filter(Exists(cases.filter(state=ReviewCase.RESOLVED)), ~unresolved)

    def filter_has_outcome(self, queryset, name, value):
        outcomes = Exists(Outcome.objects.filter(decision=OuterRef("pk")))
        return queryset.filter(outcomes if value else ~outcomes)

    def filter_feedback(self, queryset, name, value):
        """By the latest verdict given on the decision ("none": no feedback yet)."""
        given = Feedback.objects.filter(decision=OuterRef("pk"))
        if value == "none":
            return queryset.filter(~Exists(given))
        latest = Subquery(given.order_by("-created_at", "-pk").values("verdict")[:1])
        return queryset.annotate(latest_verdict=latest).filter(latest_verdict=value)

    def filter_top_reason(self, queryset, name, value):
        """Decisions whose SHAP explanation ranks `value` among its top 3 features."""
        top3 = Q(top_features__0=value) | Q(top_features__1=value) | Q(top_features__2=value)
        return queryset.filter(
            Exists(
                Explanation.objects.filter(
                    top3, decision=OuterRef("pk"), method="shap", status=Explanation.DONE
                )
            )
        )


# "from" is a Python keyword, so it is added after the class body.
DecisionFilter.base_filters["from"] = django_filters.IsoDateTimeFilter(
    field_name="predicted_at", lookup_expr="gte"
)


def filter_decisions(queryset: QuerySet, params) -> QuerySet:
    """Apply the search parameters, or raise InvalidInput naming the bad ones."""
    filterset = DecisionFilter(params, queryset=queryset)
    if not filterset.is_valid():
        raise InvalidInput(
            "Some search parameters are invalid.",
            code="invalid_parameters",
            details={name: [str(e) for e in errs] for name, errs in filterset.errors.items()},
        )
    return filter_features(filterset.qs, params)


# Feature filters: feature.<name>=value (exact), feature.<name>__gte / __lte.
FEATURE_PARAM = re.compile(r"^feature\.([A-Za-z0-9_]+?)(?:__(gte|lte))?$")


def feature_types(model_name: str | None) -> dict[str, str]:
    """Feature name -> schema type, from the model's newest version (for typing values)."""
    if not model_name:
        return {}
    version = (
        ModelVersion.objects.filter(registered_model__name=model_name)
        .order_by("-created_at")
        .only("schema")
        .first()
    )
    if version is None:
        return {}
    return {f.name: f.type for f in version.parsed_schema.features}


def _typed(raw: str, kind: str | None):
    """A query-string value as the JSON value it stands for."""
    if kind == "categorical":
        return raw
    if kind == "boolean" or (kind is None and raw.lower() in ("true", "false")):
        if raw.lower() not in ("true", "false"):
            raise ValueError("must be true or false")
        return raw.lower() == "true"
    try:
        number = float(raw)
    except ValueError:
        if kind in ("numeric", "integer"):
            raise ValueError("must be a number") from None
        return raw
    return int(number) if number.is_integer() else number


def filter_features(queryset: QuerySet, params) -> QuerySet:
    wanted = [
        (key, FEATURE_PARAM.match(key))
        for key in params
        if key.startswith("feature.") and params.get(key, "") != ""
    ]
    if not wanted:
        return queryset
    types = feature_types(params.get("model"))
    problems: dict[str, list[str]] = {}
    for key, match in wanted:
        if match is None:
            problems[key] = ["use feature.<name>, feature.<name>__gte or feature.<name>__lte"]
            continue
        name, bound = match.groups()
        if types and name not in types:
            problems[key] = [f"{name!r} is not a feature of this model"]
            continue
        try:
            value = _typed(params.get(key, ""), "numeric" if bound else types.get(name))
        except ValueError as exc:
            problems[key] = [str(exc)]
            continue
        lookup = f"inputs__{name}" + (f"__{bound}" if bound else "")
        queryset = queryset.filter(**{lookup: value})
    if problems:
        raise InvalidInput(
            "Some feature filters are invalid.", code="invalid_parameters", details=problems
        )
    return queryset


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
        value = datetime.fromisoformat(value) if field == "predicted_at" else float(value)
        return value, int(pk)
    except (ValueError, TypeError):
        raise InvalidInput(
            "cursor is not valid; use the `next` value of a previous page."
        ) from None


def parse_limit(raw: str | None) -> int:
    if raw in (None, ""):
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}.") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}.")
    return limit


def keyset_page(
    queryset: QuerySet, ordering: str | None, cursor: str | None, limit: int
) -> tuple[list, str | None]:
    """One page of results and the cursor of the next page (None on the last)."""
    if (ordering or "-predicted_at") not in ORDERINGS:
        raise InvalidInput(f"ordering must be one of {list(ORDERINGS)}.")
    field, descending = ORDERINGS[ordering or "-predicted_at"]
    # Decisions without a score sort as -1, so ordering by score keeps them.
    key = (
        Coalesce("score", Value(-1.0), output_field=FloatField()) if field == "score" else F(field)
    )
    queryset = queryset.annotate(sort_key=key)
    if cursor:
        value, pk = _decode_cursor(cursor, field)
        beyond = "lt" if descending else "gt"
        queryset = queryset.filter(
            Q(**{f"sort_key__{beyond}": value}) | Q(sort_key=value, **{f"pk__{beyond}": pk})
        )
    sign = "-" if descending else ""
    rows = list(queryset.order_by(f"{sign}sort_key", f"{sign}pk")[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _encode_cursor(last.sort_key, last.pk)
