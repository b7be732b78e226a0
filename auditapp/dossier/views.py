"""Decision pages: search, CSV download, the decision page and its live explanation panel."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from auditapp.accounts import roles
from auditapp.accounts.audit import client_ip, record_event
from auditapp.accounts.throttling import page_wait
from auditapp.decisions import presenters, proofs, services
from auditapp.decisions.lookups import get_decision_for_actor
from auditapp.decisions.models import Decision
from auditapp.dossier.filters import (
    ReasonFilter,
    every_match,
    filter_decisions_and_reason,
    in_order,
    keyset_page,
    note_search,
    search_schema,
    split_sensitive_filters,
)
from auditapp.dossier.presenters import decision_reasons, reason_labels
from auditapp.dossier.search_form import search_form
from auditapp.errors import InvalidInput
from auditapp.filtering import parse_limit, refuse_control_characters, refuse_more_rows_than
from auditapp.hashing import canonical_json
from auditapp.pages import count_up_to_limit, csv_response, is_htmx, page, query_string
from auditapp.registry.lookups import refuse_unseen_model_filter
from auditapp.replicas import from_replica, replica_view
from auditapp.reviews.models import ReviewCase
from auditapp.reviews.services import submit_feedback
from explain.counterfactual_presenters import panel as counterfactual_panel
from explain.counterfactual_work import request_counterfactuals
from explain.models import Explanation
from explain.presenters import lime_chart, lime_rule_texts, quality_notes, waterfall_chart
from explain.services import request_explanations
from explain.whatif import WhatIf, merged_inputs, run_what_if

EXPORT_LIMIT = 100_000
# The search page counts its matches up to pages.COUNT_LIMIT, then says "more than": every
# match of a month at a bank's scale is millions of rows, seconds to count (the CSV and the
# compliance report give exact figures).


def _search(request, actor) -> tuple[QuerySet, ReasonFilter | None]:
    actor.require(roles.READ_DECISIONS)
    return filter_decisions_and_reason(
        Decision.objects.visible_to(actor).with_related(), request.GET, actor
    )


@login_required
@page
@replica_view  # lists a user reaches by browsing may lag (README: Deployment)
def search(request):
    actor = roles.actor_for(request)
    queryset, reason = _search(request, actor)
    rows, next_cursor = keyset_page(
        queryset,
        request.GET.get("ordering"),
        request.GET.get("cursor"),
        parse_limit(request.GET.get("limit")),
        reason,
    )
    count, more = count_up_to_limit(every_match(queryset, reason).order_by().values("pk"))
    if not rows:
        refuse_unseen_model_filter(actor, request.GET)
    note_search(actor, request.GET, ip=client_ip(request))
    presenter = presenters.DecisionPresenter(actor)
    reasons = reason_labels(rows, presenter)
    context = {
        "results": [(d, presenter.masked_features(d), reasons[d.pk]) for d in rows],
        "count": count,
        "more": more,
        "next_query": query_string(request.GET, cursor=next_cursor) if next_cursor else None,
        "export_query": query_string(request.GET, cursor=None),
        "params": request.GET,
        "orderings": [
            ("-predicted_at", "newest first"),
            ("predicted_at", "oldest first"),
            ("-score", "highest score"),
            ("score", "lowest score"),
        ],
        **search_form(actor, request.GET),
    }
    template = "decisions/_results.html" if is_htmx(request) else "decisions/search.html"
    return render(request, template, context)


@login_required
@page
@replica_view
def search_filters(request):
    """The search form's model-dependent filters alone (templates/decisions/_filters.html).

    The model select asks for them when it changes (htmx), with the form's values: those
    the new model offers stay selected, the others are dropped, and the form then
    searches again (the `filters-changed` event) with what is left. A model the actor
    may not see gets what a model that does not exist gets.
    """
    actor = roles.actor_for(request)
    actor.require(roles.READ_DECISIONS)
    refuse_control_characters(request.GET)
    response = render(
        request, "decisions/_filters.html", search_form(actor, request.GET, fitting=True)
    )
    if is_htmx(request):
        response["HX-Trigger-After-Settle"] = "filters-changed"
    return response


@login_required
@page
def export_csv(request):
    """The current search as CSV, every row in the page's order, sensitive features masked
    as on screen; audited."""
    actor = roles.actor_for(request)
    with from_replica() as alias:
        # Bound to the search page's database now: the rows are read while the file
        # streams, after this view (and a replica_view's mark) has returned.
        queryset = every_match(*_search(request, actor)).using(alias)
        queryset, _, _ = in_order(queryset, request.GET.get("ordering"))
        refuse_more_rows_than(queryset, EXPORT_LIMIT, "search")
        queryset = queryset[:EXPORT_LIMIT]
        # The query runs once before anything is streamed: a search the database refuses
        # fails here, as an error page, not as a 200 whose file stops mid-stream.
        if not list(queryset[:1]):
            refuse_unseen_model_filter(actor, request.GET)
    presenter = presenters.DecisionPresenter(actor)
    schema = search_schema(actor, request.GET.get("model"))
    names = list(schema.types) if schema else []
    params, withheld = split_sensitive_filters(request.GET)
    record_event(
        "decisions.exported",
        actor=actor,
        ip=client_ip(request),
        format="csv",
        params=params,
        sensitive_details={"params": withheld} if withheld else None,
    )

    fixed = [
        "id",
        "model",
        "version",
        "request_id",
        "subject_ref",
        "predicted_at",
        "recorded_at",
        "prediction",
        "score",
        "content_hash",
    ]

    def rows():
        for decision in queryset.iterator(chunk_size=2000):
            data = presenter.summary(decision)
            inputs = data.pop("inputs")
            values = [data[k] for k in fixed]
            features = [inputs.get(n) for n in names] if names else [canonical_json(inputs)]
            yield values + features

    return csv_response("decisions.csv", fixed + (names or ["inputs"]), rows())


def _explanation_context(decision: Decision, actor: roles.Actor) -> dict:
    schema = decision.model_version.parsed_schema
    by_method = {e.method: e for e in decision.explanations.with_results()}
    shap, lime = by_method.get("shap"), by_method.get("lime")
    masked = presenters.DecisionPresenter(actor).masked_features(decision)
    done = Explanation.DONE
    shap_done, lime_done = shap and shap.status == done, lime and lime.status == done
    return {
        "decision": decision,
        "shap": shap,
        "lime": lime,
        "masked_features": masked,
        "waterfall": waterfall_chart(shap, schema, decision.full_inputs(), masked)
        if shap_done
        else None,
        "lime_chart": _lime_chart(decision, lime, masked) if lime_done else None,
        "reasons": decision_reasons(decision, list(by_method.values()), masked),
        "positive_class": schema.target.positive_class,
        "adverse_name": schema.target.adverse_name,
        "is_adverse": schema.target.is_adverse(decision.prediction),
        "quality": quality_notes(shap, lime),
        "busy": any(
            e.status in (Explanation.PENDING, Explanation.RUNNING) for e in by_method.values()
        ),
        "can_explain": actor.can(roles.REQUEST_EXPLANATIONS),
    }


def _lime_chart(decision: Decision, lime, masked):
    """LIME's bars, each labelled with its rule ("Annual income (EUR) ≤ 30,000")."""
    rules = lime_rule_texts(lime, decision.model_version, decision.full_inputs(), masked)
    schema = decision.model_version.parsed_schema
    return lime_chart(lime, schema, decision.full_inputs(), masked, rules=rules)


@login_required
@page
def detail(request, decision_id: int):
    actor = roles.actor_for(request)
    decision = get_decision_for_actor(actor, decision_id)
    services.note_decision_viewed(actor, decision, ip=client_ip(request), via="page")
    presenter = presenters.DecisionPresenter(actor)
    return render(request, "decisions/detail.html", _detail_context(decision, actor, presenter))


def _detail_context(decision, actor, presenter, feedback_errors=None, what_if=None) -> dict:
    schema = decision.model_version.parsed_schema
    return {
        "record": presenter.summary(decision),
        "inputs": presenters.input_rows(decision, presenter),
        "outcomes": decision.outcomes.all(),
        "feedback_history": decision.feedback.select_related("author"),
        "can_give_feedback": actor.can(roles.GIVE_FEEDBACK),
        "can_export_notices": all(actor.can(c) for c in roles.EXPORT_NOTICES),
        "classes": schema.target.classes,
        "outcome_tone": schema.target.tone(decision.prediction),
        "outcome_text": schema.target.outcome_text(decision.prediction),
        "feedback_errors": feedback_errors,
        "seal": proofs.seal_of(decision),
        **_case_context(decision, actor),
        **_explanation_context(decision, actor),
        **(what_if or _what_if_context(decision, actor, presenter)),
        **_counterfactual_context(decision, actor),
    }


@login_required
@require_POST
@page
def feedback(request, decision_id: int):
    """The feedback form of the decision page (the API takes the same fields as JSON)."""
    actor = roles.actor_for(request)
    decision = get_decision_for_actor(actor, decision_id)
    data = {"verdict": request.POST.get("verdict"), "comment": request.POST.get("comment", "")}
    if request.POST.get("corrected_label"):
        target = decision.model_version.parsed_schema.target
        data["corrected_label"] = target.label_from_text(request.POST["corrected_label"])
    if request.POST.get("explanation_rating"):
        data["explanation_rating"] = _as_int(request.POST["explanation_rating"])
    try:
        submit_feedback(actor, decision, data, ip=client_ip(request))
    except InvalidInput as exc:
        context = _detail_context(decision, actor, presenters.DecisionPresenter(actor), exc.details)
        return render(request, "decisions/detail.html", context, status=400)
    return redirect("decision-detail", decision_id=decision_id)


def _case_context(decision, actor) -> dict:
    cases = list(decision.review_cases.select_related("assignee").order_by("-opened_at"))
    case = next((c for c in cases if c.state != ReviewCase.RESOLVED), cases[0] if cases else None)
    return {
        "case": case,
        "case_events": case.events.select_related("actor") if case else [],
        "overrides": decision.overrides.select_related("author"),
        "can_work": actor.can(roles.WORK_REVIEWS),
    }


def _as_int(text: str):
    try:
        return int(text)
    except ValueError:
        return text


@login_required
@page
def explanations(request, decision_id: int):
    """The explanation panel alone, polled by htmx while an explanation is being computed."""
    actor = roles.actor_for(request)
    decision = get_decision_for_actor(actor, decision_id)
    return render(request, "decisions/_explanations.html", _explanation_context(decision, actor))


@login_required
@require_POST
@page
def explain(request, decision_id: int):
    actor = roles.actor_for(request)
    decision = get_decision_for_actor(actor, decision_id)
    request_explanations(actor, decision, ["shap", "lime"], ip=client_ip(request))
    if is_htmx(request):
        return explanations(request, decision_id)
    return redirect("decision-detail", decision_id=decision_id)


# -- what-if: the decision's inputs edited, its model's answer beside the original's ---------


def _what_if_context(
    decision: Decision,
    actor: roles.Actor,
    presenter: presenters.DecisionPresenter,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    result: WhatIf | None = None,
) -> dict:
    """The what-if form (prefilled with the inputs; a masked one empty, to be given) and,
    after a try, the original and the what-if side by side."""
    if not actor.can(roles.WHAT_IF):
        return {"can_what_if": False}
    schema = decision.model_version.parsed_schema
    masked = set(presenter.masked_features(decision))
    errors = errors or {}
    fields = []
    for feature in schema.features:
        hidden = feature.name in masked
        if values is not None and feature.name in values:
            value = values[feature.name]
        else:
            value = "" if hidden else _as_text(decision.full_inputs().get(feature.name))
        fields.append(
            {
                "name": feature.name,
                "label": feature.label,
                "type": feature.type,
                "value": value,
                "categories": feature.categories,
                "masked": hidden,
                "error": errors.get(feature.name),
            }
        )
    return {
        "can_what_if": True,
        "what_if_fields": fields,
        "what_if_errors": errors.get(""),
        "what_if": _comparison(decision, schema, masked, result) if result else None,
    }


def _as_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _comparison(decision: Decision, schema, masked: set[str], result: WhatIf) -> dict:
    target = schema.target
    original_inputs = {k: v for k, v in decision.full_inputs().items() if k not in masked}
    rows = []
    for feature in schema.features:
        hidden = feature.name in masked
        rows.append(
            {
                "name": feature.name,
                "label": feature.label,
                "original": None
                if hidden
                else feature.format_value(original_inputs.get(feature.name)),
                "what_if": feature.format_value(result.what_if.inputs.get(feature.name)),
                "changed": feature.name in result.changed,
                "given": feature.name in result.supplied_masked,
            }
        )

    def side(prediction, score, shap, inputs, hidden):
        return {
            "prediction": prediction,
            "score": score,
            "tone": target.tone(prediction),
            "outcome_text": target.outcome_text(prediction),
            "waterfall": waterfall_chart(shap, schema, inputs, sorted(hidden)) if shap.ok else None,
            "error": shap.error,
            "additivity_ok": shap.quality.get("additivity_ok"),
        }

    return {
        "rows": rows,
        "original": side(
            result.original.prediction,
            result.original.score,
            result.original.shap,
            decision.full_inputs(),
            masked,
        ),
        "recorded": {
            "prediction": decision.prediction,
            "score": decision.score,
            "tone": target.tone(decision.prediction),
        },
        "what_if": side(
            result.what_if.prediction,
            result.what_if.score,
            result.what_if.shap,
            result.what_if.inputs,
            set(),
        ),
        "positive_class": target.positive_class,
    }


def _what_if_edits(schema, post, masked: set[str]) -> tuple[dict, dict[str, str]]:
    """The form's text as typed values (Feature.from_text, as CSV imports read them); a
    masked field left empty is left out (the service names it: it must be given)."""
    edits, errors = {}, {}
    for feature in schema.features:
        text = post.get(feature.name)
        if text is None or (feature.name in masked and not text.strip()):
            continue
        value, error = feature.from_text(text)
        if error:
            errors[feature.name] = error
        else:
            edits[feature.name] = value
    return edits, errors


# -- what would change the decision (counterfactuals) -------------------------------------------
def _counterfactual_context(decision: Decision, actor: roles.Actor) -> dict:
    masked = presenters.DecisionPresenter(actor).masked_features(decision)
    return {
        "decision": decision,
        **counterfactual_panel(decision, masked),
        "can_recompute_counterfactuals": actor.can(roles.REQUEST_EXPLANATIONS),
    }


@login_required
@page
def counterfactuals(request, decision_id: int):
    """The "What would change the decision" section alone, polled by htmx while pending."""
    actor = roles.actor_for(request)
    decision = get_decision_for_actor(actor, decision_id)
    context = _counterfactual_context(decision, actor)
    return render(request, "decisions/_counterfactuals.html", context)


@login_required
@require_POST
@page
def what_if(request, decision_id: int):
    """The what-if form sent: its panel again (htmx), or the whole page without JavaScript.

    Errors are shown next to their fields, with 400 when a field is wrong (htmx swaps a 400
    as any answer: base.html's htmx-config). It counts
    against the API's rate limits (per user, per address): it runs a model as the API does.
    """
    actor = roles.actor_for(request)
    actor.require(roles.WHAT_IF)  # before the lookup, as the API
    wait = page_wait(request)
    if wait is not None and not is_htmx(request):
        refused = HttpResponse(
            f"Too many requests: try again in {wait} s.", status=429, content_type="text/plain"
        )
        refused["Retry-After"] = str(wait)
        return refused
    decision = get_decision_for_actor(actor, decision_id)
    presenter = presenters.DecisionPresenter(actor)
    if wait is not None:  # htmx: the panel as it was, saying how long to wait
        values = {f: request.POST.get(f, "") for f in decision.model_version.parsed_schema.names}
        tries = {"": f"Too many tries: try again in {wait} s."}
        context = _what_if_context(decision, actor, presenter, values, tries)
        refused = render(
            request, "decisions/_what_if.html", {"decision": decision, **context}, status=429
        )
        refused["Retry-After"] = str(wait)
        return refused
    schema = decision.model_version.parsed_schema
    masked = set(presenter.masked_features(decision))
    values = {f.name: request.POST.get(f.name, "") for f in schema.features}
    edits, errors = _what_if_edits(schema, request.POST, masked)
    # Every field's problem at once: the schema's, on the fields that were read.
    for detail in merged_inputs(decision, edits, sorted(masked))[1]:
        errors.setdefault(detail["field"].removeprefix("inputs."), detail["message"])
    result = None
    if not errors:
        try:
            result = run_what_if(
                actor, decision, {"inputs": edits}, ip=client_ip(request), via="page"
            )
        except InvalidInput as exc:
            for detail in exc.details or [{"field": "", "message": exc.message}]:
                errors[detail["field"].removeprefix("inputs.")] = detail["message"]
    context = _what_if_context(decision, actor, presenter, values, errors, result)
    status = 400 if errors else 200
    if is_htmx(request):
        panel = {"decision": decision, **context}
        return render(request, "decisions/_what_if.html", panel, status=status)
    full = _detail_context(decision, actor, presenter, what_if=context)
    return render(request, "decisions/detail.html", full, status=status)


def recompute_counterfactuals(request, decision_id: int):
    actor = roles.actor_for(request)
    decision = get_decision_for_actor(actor, decision_id)
    request_counterfactuals(actor, decision, ip=client_ip(request))
    if is_htmx(request):
        return counterfactuals(request, decision_id)
    return redirect("decision-detail", decision_id=decision_id)
