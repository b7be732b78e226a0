"""Champion and challenger: two versions of one model compared on the same inputs.

Shadow traffic makes the pairs: a served decision (one version answered) and the shadow
decision of the other version on the very same inputs (`served_by`). Either version may be
the one that answered (before and after a promotion): each pair is turned so that its
first side is version A. On the pairs: how often the two predict the same, how their
scores differ, where they disagree most, which features' SHAP attributions differ most,
how each did on the pairs whose outcome is known (the served decision's outcome: it is the
same person), and fairness side by side on the same people.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import transaction

from auditapp.accounts import roles
from auditapp.approvals import services as approvals
from auditapp.approvals.models import Approval
from auditapp.decisions.models import SHADOW, Decision, Outcome
from auditapp.encryption import merged, row_binding
from auditapp.errors import Conflict, InvalidInput, NotFound
from auditapp.monitoring import metrics
from auditapp.registry import services as registry
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.serving import services
from explain.models import ExplanationResult
from explain.packing import unpack

MAX_PAIRS = 20_000  # the newest pairs compared: a page's worth of work
SCORE_DIFFERENCE_BINS = 20
TOP_DISAGREEMENTS = 10
TOP_FEATURES = 8


@dataclass
class Side:
    """One version's decisions on the pairs, in pair order."""

    version: ModelVersion
    decision_ids: list[int] = field(default_factory=list)
    predictions: list[Any] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)


@dataclass
class Comparison:
    a: Side
    b: Side
    inputs: list[dict]
    outcomes: list[Any]  # the served decision's latest outcome, None where none is known
    agreement: float | None = None
    score_difference: dict | None = None  # B minus A
    disagreements: list[dict] = field(default_factory=list)
    features: list[dict] = field(default_factory=list)
    explained_pairs: int = 0
    performance: dict[str, dict | None] = field(default_factory=dict)
    fairness: dict[str, dict] = field(default_factory=dict)

    @property
    def pairs(self) -> int:
        return len(self.inputs)


def versions_to_compare(
    model: RegisteredModel, a: Any, b: Any
) -> tuple[ModelVersion, ModelVersion]:
    """The two versions named by the page's `a` and `b` (version labels of the model)."""
    if not a or not b:
        raise InvalidInput("Name two versions to compare: ?a=<version>&b=<version>.")
    if a == b:
        raise InvalidInput("Compare two different versions.")
    found = {v.version: v for v in model.versions.filter(version__in=[str(a), str(b)])}
    for label in (a, b):
        if str(label) not in found:
            raise NotFound(f"{model.name} has no version {label!r}.")
    return found[str(a)], found[str(b)]


def compare(a: ModelVersion, b: ModelVersion, limit: int = MAX_PAIRS) -> Comparison:
    comparison = _pairs(a, b, limit)
    if not comparison.pairs:
        return comparison
    schema = a.parsed_schema
    a_pred, b_pred = comparison.a.predictions, comparison.b.predictions
    comparison.agreement = sum(x == y for x, y in zip(a_pred, b_pred, strict=True)) / len(a_pred)
    comparison.score_difference = _score_difference(comparison)
    comparison.disagreements = _disagreements(comparison)
    comparison.features, comparison.explained_pairs = _attribution_differences(comparison)
    for key, side in (("a", comparison.a), ("b", comparison.b)):
        observed = metrics.observations(
            schema, comparison.inputs, side.scores, side.predictions, comparison.outcomes
        )
        comparison.performance[key] = metrics.performance(schema, observed)
        comparison.fairness[key] = metrics.fairness(schema, observed, None)
    return comparison


def _pairs(a: ModelVersion, b: ModelVersion, limit: int) -> Comparison:
    """The newest shadow pairs of the two versions, either one having answered."""
    columns = ("id", "served_by", "model_version_id", "prediction", "score")
    shadows = list(
        Decision.objects.filter(arm=SHADOW, model_version__in=[a, b])
        .order_by("-id")
        .values_list(*columns)[:limit]
    )
    served = {
        row[0]: row
        for row in Decision.objects.filter(
            pk__in=[s[1] for s in shadows], model_version__in=[a, b]
        ).values_list(
            "id",
            "model_version_id",
            "prediction",
            "score",
            "inputs",
            "sealed_inputs",
            "request_id",
        )
    }
    comparison = Comparison(a=Side(a), b=Side(b), inputs=[], outcomes=[])
    served_ids = []
    for shadow_id, served_id, shadow_version, shadow_prediction, shadow_score in shadows:
        answered = served.get(served_id)
        if answered is None or answered[1] == shadow_version:
            continue
        own = (served_id, answered[2], answered[3])
        other = (shadow_id, shadow_prediction, shadow_score)
        for side, (decision_id, prediction, score) in (
            (comparison.a, own if answered[1] == a.pk else other),
            (comparison.b, other if answered[1] == a.pk else own),
        ):
            side.decision_ids.append(decision_id)
            side.predictions.append(prediction)
            side.scores.append(score)
        row = row_binding(a.registered_model_id, answered[6])  # both versions of one model
        comparison.inputs.append(merged(answered[4], answered[5], row))
        served_ids.append(served_id)
    latest = _latest_outcomes(served_ids)
    comparison.outcomes = [latest.get(pk) for pk in served_ids]
    return comparison


def _latest_outcomes(decision_ids: list[int]) -> dict[int, Any]:
    latest: dict[int, Any] = {}
    rows = (
        Outcome.objects.filter(decision_id__in=decision_ids)
        .order_by("decision_id", "observed_at", "id")
        .values_list("decision_id", "outcome")
    )
    for decision_id, outcome in rows:
        latest[decision_id] = outcome  # ordered: the last one seen is the latest
    return latest


def _score_difference(comparison: Comparison) -> dict | None:
    a = np.array([np.nan if s is None else s for s in comparison.a.scores], dtype=float)
    b = np.array([np.nan if s is None else s for s in comparison.b.scores], dtype=float)
    difference = (b - a)[~(np.isnan(a) | np.isnan(b))]
    if not difference.size:
        return None
    bound = max(float(np.abs(difference).max()), 1e-6)
    counts, edges = np.histogram(difference, bins=SCORE_DIFFERENCE_BINS, range=(-bound, bound))
    return {
        "pairs": int(difference.size),
        "mean": float(difference.mean()),
        "mean_abs": float(np.abs(difference).mean()),
        "p05": float(np.percentile(difference, 5)),
        "p50": float(np.percentile(difference, 50)),
        "p95": float(np.percentile(difference, 95)),
        "max_abs": float(np.abs(difference).max()),
        "counts": [int(c) for c in counts],
        "edges": [float(e) for e in edges],
    }


def _disagreements(comparison: Comparison) -> list[dict]:
    """The pairs whose predictions differ, the largest score difference first."""
    rows = []
    for i, (pa, pb) in enumerate(
        zip(comparison.a.predictions, comparison.b.predictions, strict=True)
    ):
        if pa == pb:
            continue
        sa, sb = comparison.a.scores[i], comparison.b.scores[i]
        gap = abs(sb - sa) if sa is not None and sb is not None else None
        rows.append(
            {
                "a_id": comparison.a.decision_ids[i],
                "b_id": comparison.b.decision_ids[i],
                "a_prediction": pa,
                "b_prediction": pb,
                "a_score": sa,
                "b_score": sb,
                "gap": gap,
            }
        )
    rows.sort(key=lambda r: -(r["gap"] or 0.0))
    return rows[:TOP_DISAGREEMENTS]


def _attribution_differences(comparison: Comparison) -> tuple[list[dict], int]:
    """Per feature, the mean |SHAP_B - SHAP_A| over the pairs both sides have explained."""
    a_names = comparison.a.version.parsed_schema.names
    b_names = comparison.b.version.parsed_schema.names
    names = [name for name in a_names if name in b_names]  # a feature both versions take
    newest = _newest_shap(comparison.a.decision_ids + comparison.b.decision_ids)
    a_rows, b_rows = [], []
    for a_id, b_id in zip(comparison.a.decision_ids, comparison.b.decision_ids, strict=True):
        if a_id in newest and b_id in newest:
            a_rows.append(unpack(newest[a_id], a_names))
            b_rows.append(unpack(newest[b_id], b_names))
    if not a_rows:
        return [], 0
    a_matrix = np.array([[row[n] for n in names] for row in a_rows])
    b_matrix = np.array([[row[n] for n in names] for row in b_rows])
    gaps = np.abs(b_matrix - a_matrix).mean(axis=0)
    order = np.argsort(-gaps, kind="stable")[:TOP_FEATURES]
    return [
        {
            "feature": names[i],
            "mean_abs_difference": float(gaps[i]),
            "a_mean_abs": float(np.abs(a_matrix[:, i]).mean()),
            "b_mean_abs": float(np.abs(b_matrix[:, i]).mean()),
        }
        for i in order
    ], len(a_rows)


def _newest_shap(decision_ids: list[int]) -> dict[int, bytes]:
    newest: dict[int, bytes] = {}
    rows = (
        ExplanationResult.objects.filter(decision_id__in=decision_ids, config__method="shap")
        .order_by("decision_id", "id")
        .values_list("decision_id", "attributions")
    )
    for decision_id, attributions in rows:
        newest[decision_id] = bytes(attributions)  # ordered: the newest comes last
    return newest


PROMOTE_KIND = "promote"  # the four-eyes kind of a promotion (serving/apps.py)


def promote(
    actor: roles.Actor, model: RegisteredModel, version: ModelVersion, *, ip=None, approval=None
) -> Approval | None:
    """The challenger decides from now on: its stage becomes production and, where a traffic
    policy is in force, it answers as production (no longer canary or shadow). Both changes
    are the registry's and the policy's own, each audited; one transaction. Under four-eyes
    both wait for one approval (returned); `approval`: the approved request being applied."""
    actor.require(roles.CHANGE_STAGE)
    with transaction.atomic():
        if approval is None and approvals.gated(actor, model):
            current = services.read_traffic(model).policy
            return approvals.request_approval(
                actor,
                PROMOTE_KIND,
                registered_model=model,
                model_version=version,
                change={
                    "version": version.version,
                    "from": version.stage,
                    "revision": current.pk if current is not None else None,
                },
                summary=f"promote v{version.version} to production (stage and traffic)",
                ip=ip,
            )
        if version.stage != ModelVersion.PRODUCTION:
            registry.change_stage(actor, version, ModelVersion.PRODUCTION, ip=ip, approval=approval)
        policy = services.read_traffic(model)
        if policy.policy is None:
            return None
        document = dict(policy.document)
        canary = document.get("canary")
        if isinstance(canary, dict) and canary.get("version") == version.version:
            document["canary"] = None
        document["shadow"] = [v for v in document.get("shadow", []) if v != version.version]
        if document.get("fallback") == version.version:
            document["fallback"] = None
        document["production"] = version.version
        services.change_traffic(actor, model, document, ip=ip, approval=approval)
    return None


def apply_approved_promotion(approval, approver: roles.Actor, ip: str | None) -> dict:
    """An approved promotion, made as its requester's (approvals.changes)."""
    requester = roles.Actor(user=approval.requested_by)
    model = RegisteredModel.objects.get(pk=approval.registered_model_id)
    version = ModelVersion.objects.select_related("registered_model").get(
        pk=approval.model_version_id
    )
    try:
        promote(requester, model, version, ip=ip, approval=approval)
    except InvalidInput as exc:
        raise Conflict(
            f"The promotion no longer fits: {exc.message}",
            code="approval_stale",
            details=exc.details,
        ) from None
    newest = services.read_traffic(model).policy
    result = {"promoted": version.version, "traffic_policy": newest.pk if newest else None}
    if approval.change["from"] != ModelVersion.PRODUCTION:
        result["stage_change"] = version.stage_changes.order_by("-id").values_list("pk", flat=True)[
            0
        ]
    return result
