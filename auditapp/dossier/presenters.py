"""A decision with its explanations, outcomes and feedback, as the API's detail shows it."""

from __future__ import annotations

from collections import defaultdict

from auditapp.decisions.models import Decision
from auditapp.decisions.presenters import DecisionPresenter
from auditapp.decisions.reasons import ERASED, Reason, adverse_reasons
from auditapp.reviews.services import feedback_json
from explain.models import Explanation, TopReasons
from explain.packing import unpack
from explain.presenters import explanation_json


def decision_detail(presenter: DecisionPresenter, decision: Decision) -> dict:
    """The summary, plus what is known of the decision since; masked features withheld."""
    data = presenter.summary(decision)
    data["artifact_sha256"] = decision.model_version.artifact_sha256
    data["client"] = decision.client
    masked = presenter.masked_features(decision)
    explanations = list(decision.explanations.with_results())
    data["explanations"] = {
        explanation.method: explanation_json(explanation, masked) for explanation in explanations
    }
    data["reasons"] = [r.as_json() for r in decision_reasons(decision, explanations, masked)]
    data["outcomes"] = [
        {"outcome": o.outcome, "observed_at": o.observed_at, "recorded_at": o.recorded_at}
        for o in decision.outcomes.all()
    ]
    data["feedback"] = [feedback_json(f) for f in decision.feedback.select_related("author")]
    return data


def decision_reasons(decision: Decision, explanations, masked) -> list[Reason]:
    """The principal reasons of the decision's finished SHAP explanation, as sentences with
    the person's values; `masked` features (the reader's role may not see them) left out."""
    shap = next((e for e in explanations if e.method == "shap" and e.status == "done"), None)
    if shap is None:
        return []
    schema = decision.model_version.parsed_schema
    return adverse_reasons(
        schema, shap.attributions, decision.full_inputs(), withheld=masked, erased=decision.erased
    )


def reason_labels(rows: list[Decision], presenter: DecisionPresenter) -> dict[int, list[dict]]:
    """Each decision's top SHAP reasons for a page of search results: "Label = value", and
    which way it pushed (towards the adverse outcome or away: a declined person's top
    three may hold a feature that argued for them).

    Two queries for the page: the reasons (explain.TopReasons) and the newest SHAP
    results' attributions. A feature masked for this reader is left out, as it is from
    the decision's own `top_features`.
    """
    ids = [d.pk for d in rows]
    named: dict[int, list[str]] = defaultdict(list)
    places = TopReasons.objects.filter(decision_id__in=ids).values_list(
        "decision_id", *TopReasons.PLACES
    )
    for decision_id, *features in places:
        named[decision_id] = [name for name in features if name]
    packed = dict(
        Explanation.objects.filter(
            decision_id__in=ids, method="shap", result__isnull=False
        ).values_list("decision_id", "result__attributions")
    )
    labelled = {}
    by_version: dict[int, tuple] = {}  # a page's decisions share a few versions
    for decision in rows:
        masked = set(presenter.masked_features(decision))
        version = decision.model_version
        if version.pk not in by_version:
            schema = version.parsed_schema
            by_version[version.pk] = (schema, {f.name: f for f in schema.features})
        schema, features = by_version[version.pk]
        weights = unpack(packed[decision.pk], schema.names) if decision.pk in packed else {}
        labelled[decision.pk] = [
            _reason_label(
                features[name],
                decision.full_inputs().get(name),
                weights.get(name),
                schema,
                erased=decision.erased,
            )
            for name in named[decision.pk]
            if name in features and name not in masked
        ]
    return labelled


def _reason_label(feature, value, weight: float | None, schema, *, erased: bool = False) -> dict:
    adverse = None if weight is None else weight * schema.target.adverse_sign > 0
    towards = {True: "adverse", False: "favourable", None: ""}[adverse]
    return {
        "feature": feature.name,
        "text": f"{feature.label} ({ERASED})"
        if erased
        else f"{feature.label} = {feature.format_value(value)}",
        "towards": towards,
        "title": (
            ""
            if adverse is None
            else f"pushed {'towards' if adverse else 'away from'} “{schema.target.adverse_name}”"
        ),
    }
