"""What a monitoring snapshot's document (MetricSnapshot.data) holds, as frozen dataclasses.

metrics.py writes the document as plain JSON; views, the API and the alert rules read it
through `SnapshotDocument.from_document`, so each key is named once, here, instead of in
chains of `.get()`. `as_document()` gives the stored shape back, key for key (the API's
contract). A document written before a key existed still loads: the key's default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Self


def _nested(kind: Any, **meta: Any) -> dict:
    """Field metadata: `kind` (a document class, or a function choosing one) for a nested
    document; `each=True` for a dict of them, `items=True` for a list of them."""
    return {"kind": kind, **meta}


OPTIONAL = {"optional": True}  # left out of the document when None (metrics.py omits it)
EMPTY_WHEN_NONE = {"empty": True}  # a section stored as {} when there is nothing to say


class Document:
    """from_document / as_document for a dataclass whose fields are the document's keys."""

    @classmethod
    def from_document(cls, document: dict | None) -> Self:
        document = document or {}
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            key = f.metadata.get("key", f.name)
            if key in document:
                values[f.name] = _load(f.metadata, document[key])
        return cls(**values)

    def as_document(self) -> dict:
        document = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            if value is None and f.metadata.get("empty"):
                value = {}
            document[f.metadata.get("key", f.name)] = _dump(value)
        return document


def _load(meta, value: Any) -> Any:
    kind = meta.get("kind")
    if meta.get("empty") and value == {}:
        return None
    if kind is None or value is None:
        return value
    if meta.get("each"):
        return {name: kind(entry) for name, entry in value.items()}
    if meta.get("items"):
        return [kind(entry) for entry in value]
    return kind(value)


def _dump(value: Any) -> Any:
    if isinstance(value, Document):
        return value.as_document()
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


# --- drift -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumericDrift(Document):
    """A numeric input (or the scores) against the reference: PSI and the KS test."""

    kind: str | None = field(default=None, metadata={"key": "type", **OPTIONAL})
    psi: float | None = None
    ks_p: float | None = None
    ks_statistic: float | None = None
    drifted: bool = False
    reference_mean: float | None = None
    current_mean: float | None = None
    missing: int = 0

    @property
    def p_value(self) -> float | None:
        return self.ks_p


@dataclass(frozen=True)
class CategoricalDrift(Document):
    """A categorical input (or the predicted classes): PSI over the categories, chi-squared."""

    kind: str | None = field(default=None, metadata={"key": "type", **OPTIONAL})
    psi: float | None = None
    chi2_p: float | None = None
    drifted: bool = False
    reference_rates: dict[str, float] | None = field(default=None, metadata=OPTIONAL)
    current_rates: dict[str, float] | None = field(default=None, metadata=OPTIONAL)

    @property
    def p_value(self) -> float | None:
        return self.chi2_p


Drift = NumericDrift | CategoricalDrift


def drift_entry(document: dict) -> Drift:
    """An input's (or the predictions') drift, numeric or categorical by its keys."""
    categorical = document.get("type") == "categorical" or "chi2_p" in document
    return (CategoricalDrift if categorical else NumericDrift).from_document(document)


@dataclass(frozen=True)
class Histogram(Document):
    edges: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ScoreSummary(Document):
    """The scores of a window (or of the reference); figures only when there are scores."""

    n: int = 0
    mean: float | None = field(default=None, metadata=OPTIONAL)
    p10: float | None = field(default=None, metadata=OPTIONAL)
    median: float | None = field(default=None, metadata=OPTIONAL)
    p90: float | None = field(default=None, metadata=OPTIONAL)
    histogram: Histogram | None = field(
        default=None, metadata={**_nested(Histogram.from_document), **OPTIONAL}
    )


@dataclass(frozen=True)
class ScoreDrift(NumericDrift):
    current: ScoreSummary = field(
        default_factory=ScoreSummary, metadata=_nested(ScoreSummary.from_document)
    )
    reference: ScoreSummary = field(
        default_factory=ScoreSummary, metadata=_nested(ScoreSummary.from_document)
    )


@dataclass(frozen=True)
class ShapChange(Document):
    """Mean |SHAP| of one feature, in the reference and now."""

    reference: float = 0.0
    current: float = 0.0
    change: float = 0.0
    relative_change: float | None = None


@dataclass(frozen=True)
class AttributionDrift(Document):
    """How far the features' importance moved; NDCG 1 is the reference's order kept."""

    explained: int = 0
    mean_abs_shap: dict[str, ShapChange] = field(
        default_factory=dict, metadata=_nested(ShapChange.from_document, each=True)
    )
    ranking_ndcg: float | None = None


# --- performance and fairness -----------------------------------------------------------


@dataclass(frozen=True)
class CalibrationBin(Document):
    bin_start: float = 0.0
    bin_end: float = 0.0
    n: int = 0
    mean_score: float = 0.0
    observed_rate: float = 0.0


@dataclass(frozen=True)
class ClassificationPerformance(Document):
    """Figures on the decisions of a classifier whose outcome is known."""

    outcomes: int = 0
    positive_rate: float | None = None
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    brier: float | None = None
    calibration: list[CalibrationBin] = field(
        default_factory=list, metadata=_nested(CalibrationBin.from_document, items=True)
    )
    reference_roc_auc: float | None = None
    roc_auc_drop: float | None = None


@dataclass(frozen=True)
class RegressionPerformance(Document):
    outcomes: int = 0
    mae: float | None = None
    rmse: float | None = None
    r2: float | None = None


Performance = ClassificationPerformance | RegressionPerformance


def performance_entry(document: dict) -> Performance:
    regression = "mae" in document
    return (RegressionPerformance if regression else ClassificationPerformance).from_document(
        document
    )


@dataclass(frozen=True)
class Fairness(Document):
    """One protected feature: selection rate per group and the gaps between groups."""

    selection_rate: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    demographic_parity_difference: float | None = None
    disparate_impact_ratio: float | None = None
    four_fifths_ok: bool | None = None
    equalized_odds_difference: float | None = None
    selected_class: Any = None
    group_edges: list[float] | None = field(default=None, metadata=OPTIONAL)

    def __post_init__(self) -> None:
        # Stored as jsonb, whose keys come back by length ("< 33", "≥ 49", "33-41"):
        # groups are read in their own order again.
        for name in ("selection_rate", "counts"):
            groups = getattr(self, name)
            object.__setattr__(self, name, {g: groups[g] for g in sorted(groups, key=group_order)})


def group_order(label: str) -> tuple[int, float, str]:
    """Numeric groups by their bounds ('< 33', '33-41', '41-49', '≥ 49', with en dashes in
    metrics.numeric_groups), then categories alphabetically, then 'missing'."""
    if label == "missing":
        return (2, 0.0, label)
    bound = label[2:] if label.startswith(("< ", "≥ ")) else label.split("\u2013")[0]
    try:
        value = float(bound)
    except ValueError:
        return (1, 0.0, label)
    return (0, -math.inf if label.startswith("< ") else value, label)


# --- the whole document -----------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceInfo(Document):
    kind: str = "none"
    description: str = ""
    rows: int = 0


@dataclass(frozen=True)
class Explanations(Document):
    """Explanation rows of the window's decisions by status, and the failed share."""

    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    failure_rate: float | None = None


@dataclass(frozen=True)
class SnapshotDocument(Document):
    """Every figure of one window. A pending snapshot's document is empty: every section
    None (or no entries), as the API shows it."""

    decisions: int = 0
    reference: ReferenceInfo | None = field(
        default=None, metadata=_nested(ReferenceInfo.from_document)
    )
    drift: dict[str, Drift] = field(default_factory=dict, metadata=_nested(drift_entry, each=True))
    score_drift: ScoreDrift | None = field(
        default=None, metadata={**_nested(ScoreDrift.from_document), **EMPTY_WHEN_NONE}
    )
    prediction_drift: Drift | None = field(
        default=None, metadata={**_nested(drift_entry), **EMPTY_WHEN_NONE}
    )
    attribution_drift: AttributionDrift | None = field(
        default=None, metadata={**_nested(AttributionDrift.from_document), **EMPTY_WHEN_NONE}
    )
    performance: Performance | None = field(default=None, metadata=_nested(performance_entry))
    fairness: dict[str, Fairness] = field(
        default_factory=dict, metadata=_nested(Fairness.from_document, each=True)
    )
    explanations: Explanations | None = field(
        default=None, metadata={**_nested(Explanations.from_document), **EMPTY_WHEN_NONE}
    )

    # The single figures the pages, charts and alert rules read; None when not computed.

    @property
    def score_psi(self) -> float | None:
        return self.score_drift.psi if self.score_drift else None

    @property
    def median_score(self) -> float | None:
        return self.score_drift.current.median if self.score_drift else None

    @property
    def ranking_ndcg(self) -> float | None:
        return self.attribution_drift.ranking_ndcg if self.attribution_drift else None

    @property
    def failure_rate(self) -> float | None:
        return self.explanations.failure_rate if self.explanations else None

    def performance_figure(self, name: str) -> float | None:
        """A performance figure (roc_auc, accuracy, brier...): None without outcomes."""
        return getattr(self.performance, name, None) if self.performance else None

    def feature_psi(self, name: str) -> float | None:
        entry = self.drift.get(name)
        return entry.psi if entry else None

    def disparate_impact(self, name: str) -> float | None:
        entry = self.fairness.get(name)
        return entry.disparate_impact_ratio if entry else None
