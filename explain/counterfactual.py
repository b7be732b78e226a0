"""Counterfactual explanations: the smallest changes a person could make that flip a decision.

Pure engine code (no auditapp, Django or Celery). The method, `sparse-search`, is Attest's
own, a vectorised search through the real pipeline, in five steps:

1. **Candidates, sparsest first.** Only mutable features move (not `immutable`, never
   `protected`, not null in the instance). Each has a pool of values inside its
   bounds and direction and on its step: the background's 5 % quantiles and an even
   grid over its allowed interval (numbers), its other categories, the other truth
   value. Stage 1 tries every single-feature change; stage s (up to `max_changes`,
   3) draws values for combinations of s features (every combination, or a seeded
   sample of them when there are many), skipping any that contains a set of
   features already found to flip. The search stops at the first stage after which
   at least k different sets of features flip. Every batch goes through the
   pipeline at once.
2. **Minimal sets.** A flipping candidate with m changes is tried with each change
   undone; while one of those still flips, the sparser one takes its place.
3. **Shrinking.** Each changed number is moved back towards the original value: the
   closest flipping point of a grid of 16 between the original and the candidate,
   then of 16 within that bracket (one feature at a time, largest change first),
   snapped away from the original onto the feature's step (else the integer grid,
   else the schema's `decimals`, else a resolution of 1 % of the feature's spread
   order of magnitude).
4. **Re-scoring.** Every shrunk candidate is re-scored by the real predict function
   on the typed input rows (the frame production sends), its predicted class and
   score recorded; a candidate that is not favourable, or that breaks a schema
   rule (immutable, direction, bounds, step), is dropped and counted.
5. **Diversity.** k are picked greedily: first the sparsest, closest one; then
   each next the one that maximises its smallest dissimilarity to those already
   picked (Jaccard distance of the changed feature sets plus 1 - exp(-d) of the
   normalised distance between the two points), divided by (1 + its distance).

Figures, per counterfactual: `sparsity` (features changed), `distance` (Σ over
changed numeric features of |Δ| / the feature's spread in the background — its
median absolute deviation, else its mean absolute deviation, else its range, else
1 — plus 1 per changed categorical or boolean feature) and `plausibility` (the same
distance, over all features, from the counterfactual to the nearest background
row the model itself decides favourably; lower is more plausible).

Deterministic for a given seed: every random draw comes from one
`numpy.random.default_rng(seed)`, and the model's predictions are deterministic.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from explain.engine import ModelContext, describe
from explain.frames import CategoryCodes, input_frame
from explain.schema import Feature, Schema

METHOD = "sparse-search"
METHOD_VERSION = 1
DEFAULT_K = 3
DEFAULTS: dict[str, Any] = {
    "max_changes": 3,  # features changed at most
    "quantiles": 21,  # background quantiles in a numeric feature's pool (every 5 %)
    "grid": 21,  # evenly spaced values over a numeric feature's allowed interval
    "stage_rows": 4000,  # candidates scored per stage of 2 or more changes
    "per_combination": 8,  # values drawn per combination of features, at least
    "per_set": 4,  # closest flippers kept per set of changed features
    "pool": 48,  # flippers minimised, shrunk and re-scored at most
    "shrink_grid": 16,  # points per shrinking pass (two passes per changed number)
}
MAX_K = 10

Predictions = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class Predictor:
    """What the model decides on raw input frames (Schema.frame's columns and dtypes).

    `labels` gives predicted classes (or values, for a regression), `scores` the
    probability of the schema's positive class (the regression's value), or None
    when the model gives no score.
    """

    labels: Predictions
    scores: Callable[[pd.DataFrame], np.ndarray | None]


def pipeline_predictor(context: ModelContext) -> Predictor:
    """The real pipeline's own calls: predict() for the class, predict_proba() for the score."""
    model = context.model

    def labels(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict(frame)).reshape(-1)

    def scores(frame: pd.DataFrame) -> np.ndarray | None:
        if not context.is_classifier:
            return np.asarray(model.predict(frame), dtype=float).reshape(-1)
        if not hasattr(model, "predict_proba"):
            return None
        probabilities = np.asarray(model.predict_proba(frame), dtype=float)
        return probabilities[:, context.positive_index()]

    return Predictor(labels=labels, scores=scores)


@dataclass(frozen=True)
class Goal:
    """The favourable decision: a predicted class, or a score on one side of a threshold.

    With a class, the model's own decision rule (predict()) decides. With a
    threshold, the score decides: favourable when score < threshold (the score is
    the probability of an adverse positive class, or a regression's value, where
    higher is adverse), or score ≥ threshold when `favourable_above`.
    """

    favourable_class: str | int | None = None
    threshold: float | None = None
    favourable_above: bool = False

    def favourable(self, predictor: Predictor, frame: pd.DataFrame) -> np.ndarray:
        if self.threshold is None:
            labels = predictor.labels(frame)
            return np.asarray(labels.astype(str) == str(self.favourable_class), dtype=bool)
        scores = predictor.scores(frame)
        if scores is None:
            raise ValueError("a threshold goal needs a model that gives scores")
        return self.is_favourable_score(scores)

    def is_favourable_score(self, scores: np.ndarray) -> np.ndarray:
        assert self.threshold is not None
        if self.favourable_above:
            return np.asarray(scores >= self.threshold, dtype=bool)
        return np.asarray(scores < self.threshold, dtype=bool)

    def document(self) -> dict[str, Any]:
        if self.threshold is None:
            return {"favourable_class": self.favourable_class}
        side = ">=" if self.favourable_above else "<"
        return {"score": side, "threshold": self.threshold}


def goal_for(
    schema: Schema, threshold: float | None = None, favourable_above: bool | None = None
) -> Goal:
    """The favourable decision as the schema defines it.

    Without a threshold: the target's favourable class (declared, or a binary
    target's non-positive class), decided by the model's predict(). With one: the
    score past it, on the favourable side (below it when the positive class is the
    adverse one, at or above it when `favourable` is the positive class; below it
    for a regression, where a higher value is the adverse side), unless
    `favourable_above` says otherwise.
    """
    target = schema.target
    if threshold is not None:
        if not math.isfinite(threshold):
            raise ValueError("the threshold must be a finite number")
        above = target.adverse_sign < 0 if favourable_above is None else favourable_above
        return Goal(threshold=float(threshold), favourable_above=above)
    if target.type != "classification":
        raise ValueError("a regression's counterfactuals need a threshold on its value")
    favourable = target.favourable_class
    if favourable is None:
        raise ValueError(
            "the schema names no favourable class (target.favourable) for a target of "
            f"{len(target.classes)} classes"
        )
    return Goal(favourable_class=favourable)


@dataclass
class Counterfactual:
    """One counterfactual: the changes, and what the real model decides on the changed inputs."""

    changes: dict[str, dict[str, Any]]  # {"income": {"from": 19210.0, "to": 27000.0}}
    inputs: dict[str, Any]  # every input, changed ones included (what was re-scored)
    prediction: Any  # the re-scored predicted class (or value)
    score: float | None  # the re-scored score (probability of the positive class)
    sparsity: int  # number of features changed
    distance: float  # to the original (see the module's docstring)
    plausibility: float | None  # to the nearest favourably decided background row (None: none)

    def document(self) -> dict[str, Any]:
        return {
            "changes": self.changes,
            "prediction": self.prediction,
            "score": self.score,
            "sparsity": self.sparsity,
            "distance": self.distance,
            "plausibility": self.plausibility,
        }


@dataclass
class CounterfactualResult:
    """One decision's counterfactuals, with everything a recomputation needs."""

    method: str = METHOD
    method_version: int = METHOD_VERSION
    library_versions: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    goal: dict[str, Any] = field(default_factory=dict)
    original: dict[str, Any] = field(default_factory=dict)  # prediction, score, favourable
    counterfactuals: list[Counterfactual] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # why there are fewer than k (already favourable, none found...)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def document(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "method_version": self.method_version,
            "library_versions": self.library_versions,
            "config": self.config,
            "seed": self.seed,
            "goal": self.goal,
            "original": self.original,
            "counterfactuals": [c.document() for c in self.counterfactuals],
            "quality": self.quality,
            "note": self.note,
            "error": self.error,
        }


# -- per-feature arithmetic ------------------------------------------------------------------
def spread(values: np.ndarray) -> float:
    """A feature's spread in the background: MAD, else mean absolute deviation, else range,
    else 1 (a constant column)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return 1.0
    mad = float(np.median(np.abs(values - np.median(values))))
    if mad > 0:
        return mad
    mean_deviation = float(np.mean(np.abs(values - np.mean(values))))
    if mean_deviation > 0:
        return mean_deviation
    width = float(values.max() - values.min())
    return width if width > 0 else 1.0


@dataclass(frozen=True)
class Grid:
    """Where a numeric feature's values may lie: anchor + k * step (no step: anywhere)."""

    anchor: float = 0.0
    step: float | None = None

    def snap(self, values: np.ndarray, origin: float, low: float, high: float) -> np.ndarray:
        """Values onto the grid, away from `origin` (a change never shrinks by snapping),
        inside [low, high]; what cannot be placed, or lands on the origin, is NaN."""
        values = np.asarray(values, dtype=float)
        if self.step is not None:
            units = (values - self.anchor) / self.step
            # A tiny tolerance: 2.0000000001 steps is 2 steps, not 3.
            up = self.anchor + np.ceil(units - 1e-9) * self.step
            down = self.anchor + np.floor(units + 1e-9) * self.step
            snapped = np.where(values > origin, up, down)
            snapped = np.where(snapped > high, snapped - self.step, snapped)
            snapped = np.where(snapped < low, snapped + self.step, snapped)
            digits = max(0, 10 - math.floor(math.log10(self.step)))
            values = np.round(snapped, min(digits, 15))
        inside = (values >= low) & (values <= high) & (values != origin)
        return np.where(inside, values, np.nan)


def feature_grid(feature: Feature, scale: float) -> Grid:
    """The declared step (from `min`, else 0); else whole numbers for an integer feature;
    else the schema's decimals; else a resolution of a hundredth of the spread's order
    of magnitude (income spread 8,000: 10 EUR; a ratio's 0.15: 0.001)."""
    anchor = feature.minimum if feature.minimum is not None else 0.0
    if feature.step is not None:
        return Grid(anchor=float(anchor), step=feature.step)
    if feature.type == "integer":
        return Grid(anchor=0.0, step=1.0)
    if feature.decimals is not None:
        return Grid(anchor=0.0, step=10.0**-feature.decimals)
    return Grid(anchor=0.0, step=10.0 ** (math.floor(math.log10(scale)) - 2))


def library_versions(model: Any) -> dict[str, str]:
    """numpy, pandas and the libraries the model's steps come from, with their versions."""
    modules = {"numpy", "pandas"}
    for part in [model, *(step for _, step in getattr(model, "steps", []) or [])]:
        modules.add(type(part).__module__.split(".")[0])
    distributions = {"sklearn": "scikit-learn", "xgboost": "xgboost", "lightgbm": "lightgbm"}
    versions = {}
    for module in sorted(modules):
        name = distributions.get(module, module)
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if module == "xgboost":
                try:
                    versions[name] = metadata.version("xgboost-cpu")
                except metadata.PackageNotFoundError:
                    continue
    return versions


# -- the search ------------------------------------------------------------------------------
@dataclass
class _Feature:
    index: int
    feature: Feature
    kind: str  # "number", "category", "boolean"
    scale: float
    low: float  # the allowed interval (schema bounds, else the background's range)
    high: float
    grid: Grid


class CounterfactualSearch:
    """The search prepared for one model version (background spreads, its favourable rows).

    Build once per version (a worker caches it beside its explainers), then call
    `explain(inputs, seed, k)` per decision.
    """

    def __init__(
        self,
        schema: Schema,
        background: pd.DataFrame,
        predictor: Predictor,
        goal: Goal,
        options: dict[str, Any] | None = None,
        *,
        versions: dict[str, str] | None = None,
        provenance: dict[str, Any] | None = None,
    ):
        if background is None or len(background) == 0:
            raise ValueError("counterfactuals need the version's background sample")
        unknown = sorted(set(options or {}) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown counterfactual option(s) {unknown}")
        self.schema = schema
        self.predictor = predictor
        self.goal = goal
        self.options = {**DEFAULTS, **(options or {})}
        self.versions = versions or {}
        self.provenance = provenance or {}
        self.codes = CategoryCodes(schema)
        self.background = self.codes.encode(background[schema.names])
        self.categorical = np.array([f.type in ("categorical", "boolean") for f in schema.features])
        self.features = [self._describe(i, f) for i, f in enumerate(schema.features)]
        self.scales = np.array([f.scale for f in self.features])
        favourable = goal.favourable(predictor, self._frame(self.background))
        self.favourable_background = self.background[favourable]

    def _describe(self, index: int, feature: Feature) -> _Feature:
        column = self.background[:, index]
        if feature.type in ("categorical", "boolean"):
            kind = "category" if feature.type == "categorical" else "boolean"
            return _Feature(index, feature, kind, 1.0, 0.0, 0.0, Grid())
        scale = spread(column)
        seen = column[~np.isnan(column)]
        low = feature.minimum if feature.minimum is not None else float(seen.min(initial=0.0))
        high = feature.maximum if feature.maximum is not None else float(seen.max(initial=0.0))
        return _Feature(index, feature, "number", scale, low, high, feature_grid(feature, scale))

    # -- frames and figures -----------------------------------------------------------------
    def _frame(self, array: np.ndarray, instance: dict[str, Any] | None = None) -> pd.DataFrame:
        """Encoded rows as the frame the model takes (integer columns as int64, an
        instance's null values kept null)."""
        frame = self.codes.decode(array)
        for described in self.features:
            i = described.index
            if instance is not None and instance[described.feature.name] is None:
                name = described.feature.name
                null = input_frame(self.schema, [instance])[name]
                frame[name] = pd.Series([null.iloc[0]] * len(frame), dtype=null.dtype)
            elif described.feature.type == "integer" and not np.isnan(array[:, i]).any():
                frame.isetitem(i, array[:, i].astype(np.int64))
        return frame

    def _distances(self, points: np.ndarray, origin: np.ndarray) -> np.ndarray:
        """Rows of `points` to `origin`: |Δ| / spread for numbers, 1 per changed category."""
        delta = np.abs(points - origin)
        delta = np.where(
            np.isnan(delta), np.where(np.isnan(points) & np.isnan(origin), 0, 1), delta
        )
        per = np.where(self.categorical, delta > 0, delta / self.scales)
        return np.asarray(per.sum(axis=1), dtype=float)

    def _plausibility(self, points: np.ndarray) -> np.ndarray:
        if len(self.favourable_background) == 0:
            return np.full(len(points), np.nan)
        return np.array([self._distances(self.favourable_background, p).min() for p in points])

    # -- candidate pools --------------------------------------------------------------------
    def _pool(self, described: _Feature, origin: float) -> np.ndarray:
        """The values a feature may take in a counterfactual of this instance."""
        if described.kind == "category":
            count = len(described.feature.categories)
            return np.array([c for c in range(count) if c != origin], dtype=float)
        if described.kind == "boolean":
            return np.array([1.0 - origin])
        low, high = described.low, described.high
        if described.feature.direction == "increase":
            low = max(low, origin)
        elif described.feature.direction == "decrease":
            high = min(high, origin)
        if low > high:
            return np.array([])
        column = self.background[:, described.index]
        column = column[~np.isnan(column)]
        quantiles = (
            np.quantile(column, np.linspace(0, 1, int(self.options["quantiles"])))
            if column.size
            else np.array([])
        )
        values = np.concatenate(
            [quantiles, np.linspace(low, high, int(self.options["grid"])), [low, high]]
        )
        values = values[(values >= low) & (values <= high)]
        snapped = described.grid.snap(values, origin, low, high)
        return np.unique(snapped[~np.isnan(snapped)])

    def _mutable(self, origin: np.ndarray) -> list[int]:
        return [
            d.index for d in self.features if d.feature.mutable and not np.isnan(origin[d.index])
        ]

    # -- one decision -----------------------------------------------------------------------
    def explain(
        self, inputs: dict[str, Any], seed: int, k: int = DEFAULT_K
    ) -> CounterfactualResult:
        """Up to k counterfactuals of one decision's raw inputs; never raises for a bad row
        (the result's error says what went wrong)."""
        result = CounterfactualResult(
            library_versions=dict(self.versions),
            config=self._config(k),
            seed=seed,
            goal=self.goal.document(),
        )
        try:
            self._explain(inputs, seed, k, result)
        except Exception as exc:
            result.counterfactuals = []
            result.error = describe(exc)
        return result

    def _config(self, k: int) -> dict[str, Any]:
        return {
            "k": k,
            **self.options,
            "spreads": {d.feature.name: d.scale for d in self.features if d.kind == "number"},
            "background_rows": len(self.background),
            "favourable_background_rows": len(self.favourable_background),
            **self.provenance,
        }

    def _explain(
        self, inputs: dict[str, Any], seed: int, k: int, result: CounterfactualResult
    ) -> None:
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be from 1 to {MAX_K}, got {k}")
        if errors := self.schema.input_errors(inputs):
            raise ValueError("; ".join(f"{where} {why}" for where, why in errors))
        rows_scored = 0
        original_frame = input_frame(self.schema, [inputs])
        origin = self.codes.encode(original_frame)[0]
        label, score = self._rescore(original_frame)
        favourable = bool(self._favourable_rescored(label, score)[0])
        result.original = {
            "prediction": _plain(label[0]),
            "score": None if score is None else float(score[0]),
            "favourable": favourable,
            "plausibility": _number(self._plausibility(origin[None, :])[0]),
        }
        if favourable:
            result.note = "the decision is already favourable: nothing to change"
            result.quality = self._quality([], k, rows_scored, 0)
            return
        rng = np.random.default_rng(seed)
        mutable = self._mutable(origin)
        pools = {j: self._pool(self.features[j], float(origin[j])) for j in mutable}
        mutable = [j for j in mutable if len(pools[j])]

        def flips(points: np.ndarray) -> np.ndarray:
            nonlocal rows_scored
            rows_scored += len(points)
            if len(points) == 0:
                return np.zeros(0, dtype=bool)
            return self.goal.favourable(self.predictor, self._frame(points, inputs))

        found: list[np.ndarray] = []
        flipping_sets: set[frozenset[int]] = set()
        for size in range(1, min(int(self.options["max_changes"]), len(mutable)) + 1):
            candidates = self._stage(origin, mutable, pools, size, flipping_sets, rng)
            if len(candidates) == 0:
                continue
            hits = candidates[flips(candidates)]
            found.extend(hits)
            flipping_sets |= {self._changed_set(point, origin) for point in hits}
            if len(flipping_sets) >= k:
                break
        if not found:
            result.note = (
                f"no change of at most {self.options['max_changes']} mutable feature(s) "
                "within their bounds, directions and steps flips the decision"
            )
            result.quality = self._quality([], k, rows_scored, 0)
            return
        pool = self._shortlist(np.array(found), origin)
        pool = self._minimise(pool, origin, flips)
        pool = self._shrink(pool, origin, flips)
        pool = np.unique(pool, axis=0)
        verified, dropped = self._verify(pool, origin, inputs)
        chosen = self._diverse(verified, origin, k)
        result.counterfactuals = chosen
        if len(chosen) < k:
            result.note = f"{len(chosen)} counterfactual(s) found of the {k} asked for"
        result.quality = self._quality(chosen, k, rows_scored + len(pool), dropped)

    def _changed_set(self, point: np.ndarray, origin: np.ndarray) -> frozenset[int]:
        return frozenset(np.flatnonzero(point != origin).tolist())

    def _stage(
        self,
        origin: np.ndarray,
        mutable: list[int],
        pools: dict[int, np.ndarray],
        size: int,
        flipping_sets: set[frozenset[int]],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Candidates changing exactly `size` features: every value for one feature; values
        drawn from the pools for combinations of several."""
        if size == 1:
            rows = []
            for j in mutable:
                block = np.repeat(origin[None, :], len(pools[j]), axis=0)
                block[:, j] = pools[j]
                rows.append(block)
            return np.concatenate(rows) if rows else np.empty((0, len(origin)))
        combinations = [
            c
            for c in itertools.combinations(mutable, size)
            if not any(s <= set(c) for s in flipping_sets)
        ]
        if not combinations:
            return np.empty((0, len(origin)))
        budget = int(self.options["stage_rows"])
        per = max(int(self.options["per_combination"]), budget // len(combinations))
        if len(combinations) * per > budget:
            keep = rng.choice(len(combinations), size=max(1, budget // per), replace=False)
            combinations = [combinations[i] for i in sorted(keep)]
        block = np.repeat(origin[None, :], len(combinations) * per, axis=0)
        for n, combination in enumerate(combinations):
            for j in combination:
                block[n * per : (n + 1) * per, j] = rng.choice(pools[j], size=per)
        return block

    def _shortlist(self, found: np.ndarray, origin: np.ndarray) -> np.ndarray:
        """The closest few flippers of every set of changed features, then the closest overall."""
        found = np.unique(found, axis=0)
        distances = self._distances(found, origin)
        sets = [self._changed_set(p, origin) for p in found]
        order = sorted(range(len(found)), key=lambda i: (len(sets[i]), distances[i], i))
        kept: list[int] = []
        per_set: dict[frozenset[int], int] = {}
        for i in order:
            if per_set.get(sets[i], 0) < int(self.options["per_set"]):
                per_set[sets[i]] = per_set.get(sets[i], 0) + 1
                kept.append(i)
        return np.asarray(found[kept[: int(self.options["pool"])]])

    def _minimise(
        self, pool: np.ndarray, origin: np.ndarray, flips: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """Undo changes while the candidate still flips: each ends with a minimal set."""
        pool = pool.copy()
        for _ in range(int(self.options["max_changes"])):
            variants, owners = [], []
            for n, point in enumerate(pool):
                changed = np.flatnonzero(point != origin)
                if len(changed) < 2:
                    continue
                for j in changed:
                    variant = point.copy()
                    variant[j] = origin[j]
                    variants.append(variant)
                    owners.append(n)
            if not variants:
                break
            candidates = np.array(variants)
            hits = flips(candidates)
            if not hits.any():
                break
            distances = self._distances(candidates, origin)
            best: dict[int, int] = {}
            for v in np.flatnonzero(hits).tolist():
                owner = owners[v]
                if owner not in best or distances[v] < distances[best[owner]]:
                    best[owner] = v
            for owner, v in best.items():
                pool[owner] = candidates[v]
        return pool

    def _shrink(
        self, pool: np.ndarray, origin: np.ndarray, flips: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """Each changed number moved back towards the original while the decision stays flipped."""
        pool = pool.copy()
        points = int(self.options["shrink_grid"])
        numbers = [d.index for d in self.features if d.kind == "number"]
        orders = []
        for point in pool:
            changed = [j for j in numbers if point[j] != origin[j]]
            size = {j: abs(point[j] - origin[j]) / self.scales[j] for j in changed}
            orders.append(sorted(changed, key=lambda j: (-size[j], j)))
        for position in range(int(self.options["max_changes"])):
            owners = [n for n, order in enumerate(orders) if len(order) > position]
            if not owners:
                break
            low = np.zeros(len(owners))  # fractions of the change: low does not flip (0: none)
            high = np.ones(len(owners))  # high flips (1: the whole change)
            span = np.array(
                [pool[n, orders[n][position]] - origin[orders[n][position]] for n in owners]
            )
            for _ in range(2):  # a coarse pass, then one within the bracket it found
                fractions = np.linspace(0, 1, points + 1)[1:]
                tries = low[:, None] + (high - low)[:, None] * fractions[None, :]
                candidates, values = [], []
                for row, n in enumerate(owners):
                    j = orders[n][position]
                    described = self.features[j]
                    target = origin[j] + tries[row] * span[row]
                    snapped = described.grid.snap(target, origin[j], described.low, described.high)
                    snapped = np.where(np.isnan(snapped), pool[n, j], snapped)
                    block = np.repeat(pool[n][None, :], points, axis=0)
                    block[:, j] = snapped
                    candidates.append(block)
                    values.append(snapped)
                hits = flips(np.concatenate(candidates)).reshape(len(owners), points)
                for row, n in enumerate(owners):
                    j = orders[n][position]
                    flipped = np.flatnonzero(hits[row])
                    if len(flipped) == 0:
                        continue  # none of the tries flips (non-monotone): keep the change
                    first = int(flipped[0])
                    pool[n, j] = values[row][first]
                    high[row] = tries[row, first]
                    low[row] = tries[row, first - 1] if first > 0 else low[row]
        return pool

    def _verify(
        self, pool: np.ndarray, origin: np.ndarray, inputs: dict[str, Any]
    ) -> tuple[list[Counterfactual], int]:
        """Re-score every candidate through the real predict function on its typed input row;
        keep the favourable ones that respect every schema rule."""
        rows = [self._inputs(point, origin, inputs) for point in pool]
        if not rows:
            return [], 0
        frame = input_frame(self.schema, rows)
        labels, scores = self._rescore(frame)
        favourable = self._favourable_rescored(labels, scores)
        # Distances from the typed rows, as re-scored (snapping may have rounded).
        points = self.codes.encode(frame)
        distances = self._distances(points, origin)
        plausibility = self._plausibility(points)
        kept, dropped = [], 0
        for n, row in enumerate(rows):
            changes = {
                name: {"from": inputs[name], "to": row[name]}
                for name in self.schema.names
                if row[name] != inputs[name]
            }
            if not favourable[n] or not changes or self.rule_errors(inputs, row):
                dropped += 1
                continue
            kept.append(
                Counterfactual(
                    changes=changes,
                    inputs=row,
                    prediction=_plain(labels[n]),
                    score=None if scores is None else float(scores[n]),
                    sparsity=len(changes),
                    distance=float(distances[n]),
                    plausibility=_number(plausibility[n]),
                )
            )
        return kept, dropped

    def _inputs(
        self, point: np.ndarray, origin: np.ndarray, inputs: dict[str, Any]
    ) -> dict[str, Any]:
        row = dict(inputs)
        for j in np.flatnonzero(point != origin):
            feature = self.schema.features[j]
            value = float(point[j])
            if feature.type == "categorical":
                row[feature.name] = feature.categories[int(value)]
            elif feature.type == "boolean":
                row[feature.name] = bool(value >= 0.5)
            elif feature.type == "integer":
                row[feature.name] = round(value)
            else:
                row[feature.name] = value
        return row

    def rule_errors(self, inputs: dict[str, Any], row: dict[str, Any]) -> list[str]:
        """What a changed row breaks of the schema's rules (none, by construction)."""
        problems = [f"{where} {why}" for where, why in self.schema.input_errors(row)]
        for feature in self.schema.features:
            before, after = inputs[feature.name], row[feature.name]
            if before == after:
                continue
            if not feature.mutable:
                problems.append(f"{feature.name} is immutable but changed")
            if feature.direction == "increase" and not after > before:
                problems.append(f"{feature.name} may only increase")
            if feature.direction == "decrease" and not after < before:
                problems.append(f"{feature.name} may only decrease")
            if feature.step is not None:
                anchor = feature.minimum if feature.minimum is not None else 0.0
                units = (after - anchor) / feature.step
                if abs(units - round(units)) > 1e-6:
                    problems.append(f"{feature.name} is off its step {feature.step}")
        return problems

    def _rescore(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        return self.predictor.labels(frame), self.predictor.scores(frame)

    def _favourable_rescored(self, labels: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
        if self.goal.threshold is None:
            return np.asarray(labels.astype(str) == str(self.goal.favourable_class), dtype=bool)
        if scores is None:
            raise ValueError("a threshold goal needs a model that gives scores")
        return self.goal.is_favourable_score(scores)

    def _diverse(
        self, verified: list[Counterfactual], origin: np.ndarray, k: int
    ) -> list[Counterfactual]:
        """Greedy max-min diversity: the sparsest, closest first; then the most different
        from those picked, per unit of distance."""
        if not verified:
            return []
        remaining = sorted(verified, key=lambda c: (c.sparsity, c.distance, _key(c)))
        points = {
            id(c): self.codes.encode(input_frame(self.schema, [c.inputs]))[0] for c in remaining
        }
        chosen = [remaining.pop(0)]
        while remaining and len(chosen) < k:
            scored = [
                (
                    min(self._dissimilarity(candidate, c, points) for c in chosen)
                    / (1.0 + candidate.distance),
                    -i,
                )
                for i, candidate in enumerate(remaining)
            ]
            best = max(range(len(remaining)), key=lambda i: scored[i])
            if scored[best][0] <= 1e-9:
                break  # only duplicates of those chosen are left
            chosen.append(remaining.pop(best))
        return chosen

    def _dissimilarity(
        self, a: Counterfactual, b: Counterfactual, points: dict[int, np.ndarray]
    ) -> float:
        sets = set(a.changes), set(b.changes)
        jaccard = 1.0 - len(sets[0] & sets[1]) / len(sets[0] | sets[1])
        gap = float(self._distances(points[id(a)][None, :], points[id(b)])[0])
        return jaccard + (1.0 - math.exp(-gap))

    def _quality(
        self, chosen: Sequence[Counterfactual], k: int, rows_scored: int, dropped: int
    ) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return float(np.mean(values)) if values else None

        return {
            "requested": k,
            "found": len(chosen),
            "validity": 1.0 if chosen else None,  # every one kept flipped when re-scored
            "mean_sparsity": mean([c.sparsity for c in chosen]),
            "mean_distance": mean([c.distance for c in chosen]),
            "mean_plausibility": mean(
                [c.plausibility for c in chosen if c.plausibility is not None]
            ),
            "rows_scored": rows_scored,
            "dropped_on_rescore": dropped,
        }


def _key(counterfactual: Counterfactual) -> str:
    return repr(sorted(counterfactual.changes.items()))


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# -- a model version --------------------------------------------------------------------------
def search_for(
    context: ModelContext,
    options: dict[str, Any] | None = None,
    *,
    threshold: float | None = None,
    favourable_above: bool | None = None,
) -> CounterfactualSearch:
    """The search for a model version, on its real pipeline and background sample."""
    if context.background is None:
        raise ValueError("counterfactuals need the version's background sample")
    goal = goal_for(context.schema, threshold, favourable_above)
    return CounterfactualSearch(
        context.schema,
        context.background,
        pipeline_predictor(context),
        goal,
        options,
        versions=library_versions(context.model),
        provenance={
            "background_sha256": context.background_sha256,
            "artifact_sha256": context.artifact_sha256,
        },
    )


def counterfactuals(
    context: ModelContext,
    inputs: dict[str, Any],
    seed: int,
    k: int = DEFAULT_K,
    options: dict[str, Any] | None = None,
    *,
    threshold: float | None = None,
) -> CounterfactualResult:
    """Up to k counterfactuals of one decision (builds the search: cache `search_for` to
    explain many decisions of one version)."""
    return search_for(context, options, threshold=threshold).explain(inputs, seed, k)
