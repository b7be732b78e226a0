"""Counterfactual benchmark: time to k = 3 counterfactuals per adverse decision, beside the raw
predict calls the search makes.

Run with `.venv/bin/python bench/counterfactual.py` (`--decisions 50`, `--models gbm,xgb`).
Not a test: it prints figures beside a raw baseline and marks the target (p95 ≤ 2 s per
decision on the 2-core machine). No database, no broker: the engine alone, as a worker
runs it.

1. The demo's data and model as `load_demo` builds them: applicants(6000, seed=7), the
   GradientBoostingClassifier pipeline trained on the first 4,000, a background of the
   next 1,000 held-out rows. The schema is the demo's with its actionability declared
   (prior defaults immutable; employment years and income only up, income in steps of
   100 EUR; loan amount and debt ratio only down, in steps of 500 EUR and 0.01; age and
   sex protected, so immutable).
2. On the same data and schema: an XGBoost pipeline (one-hot, 200 trees of depth 6,
   n_jobs=1), and with `--models` also LightGBM (200 trees, 31 leaves, n_jobs=1) and a
   scaled MLP (the model-agnostic path).
3. Per model: the search is built once (as a worker caches it per version); then
   --decisions adverse decisions of applicants(4000, seed=11) (what load_demo replays)
   each get k = 3 counterfactuals with the seed of its position, timed one by one after
   WARMUP decisions: the first adverse ones (typical), then the most adverse ones (the
   highest adverse scores: those that need the most changes, the search's worst case).
   Every returned counterfactual is re-scored here by the pipeline's own predict() and
   must be favourable (the bench stops otherwise).
4. The raw baseline, in the same run: every batch the search sent to the model
   (recorded as frames), sent again straight to model.predict(), timed per decision.
   Its ratio to the search is what the search adds to the model's own cost (building
   candidates, decoding frames, shrinking, scoring distances, choosing).

Every process is limited to one BLAS/OpenMP thread, as the explanation bench does.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bench/explain.py sits beside this file and Python puts this folder first on sys.path:
# it would shadow the `explain` package. The project root goes there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from auditapp.demo import credit  # noqa: E402  (no Django in it)
from explain import counterfactual as cf  # noqa: E402
from explain.engine import ModelContext  # noqa: E402
from explain.schema import parse_schema  # noqa: E402

TARGET_P95_S = 2.0
K = 3
WARMUP = 3
ACTIONABILITY = {
    "prior_defaults": {"immutable": True},
    "employment_years": {"direction": "increase"},
    "income": {"direction": "increase", "step": 100},
    "loan_amount": {"direction": "decrease", "step": 500},
    "debt_ratio": {"direction": "decrease", "step": 0.01},
}


def schema_document(name: str) -> dict:
    spec = copy.deepcopy(credit.SCHEMA)
    for feature in spec["features"]:
        feature.update(ACTIONABILITY.get(feature["name"], {}))
    if name == "xgb":  # XGBoost learns integer classes: 1 is "bad"
        spec["target"] = {
            "type": "classification",
            "classes": [0, 1],
            "positive_class": 1,
            "favourable": 0,
        }
    return spec


def one_hot(estimator, scale: list[str] | None = None):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    steps = [("categorical", OneHotEncoder(handle_unknown="ignore"), credit.CATEGORICAL)]
    if scale:
        steps.append(("numeric", StandardScaler(), scale))
    return Pipeline(
        [("prep", ColumnTransformer(steps, remainder="passthrough")), ("model", estimator)]
    )


def train(name: str, frame: pd.DataFrame):
    """The model `name`, trained on the demo's 4,000 training applicants."""
    features, outcome = frame[credit.FEATURES], frame["outcome"]
    if name == "gbm":
        return credit.train_model(frame)  # the demo's own pipeline
    if name == "xgb":
        from xgboost import XGBClassifier

        model = one_hot(XGBClassifier(n_estimators=200, max_depth=6, n_jobs=1, random_state=0))
        return model.fit(features, (outcome == "bad").astype(int))
    if name == "lgbm":
        from lightgbm import LGBMClassifier

        estimator = LGBMClassifier(n_estimators=200, num_leaves=31, n_jobs=1, verbose=-1)
        return one_hot(estimator).fit(features, outcome)
    if name == "mlp":
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        numeric = [n for n in credit.NUMERIC if n != "has_guarantor"]
        model = one_hot(MLPClassifier((32,), max_iter=400, random_state=0), scale=numeric)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(features, outcome)
    raise SystemExit(f"unknown model {name!r} (gbm, xgb, lgbm, mlp)")


LABELS = {
    "gbm": "demo GBM (sklearn, one-hot)",
    "xgb": "XGBoost pipeline (200 trees)",
    "lgbm": "LightGBM pipeline (200 trees)",
    "mlp": "MLP pipeline (model-agnostic)",
}


class Recorder:
    """The real predictor, with every frame it is given kept for the raw replay."""

    def __init__(self, predictor: cf.Predictor):
        self.predictor = predictor
        self.frames: list[pd.DataFrame] = []

    def labels(self, frame: pd.DataFrame) -> np.ndarray:
        self.frames.append(frame)
        return self.predictor.labels(frame)

    def scores(self, frame: pd.DataFrame) -> np.ndarray | None:
        self.frames.append(frame)
        return self.predictor.scores(frame)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def prepared(name: str):
    frame = credit.applicants(6000, seed=7)
    model = train(name, frame.iloc[:4000])
    schema = parse_schema(schema_document(name))
    background = frame[credit.FEATURES].iloc[4000:5000].reset_index(drop=True)
    context = ModelContext(model, schema, background, "b" * 64, "a" * 64)
    search = cf.search_for(context)
    favourable = str(search.goal.favourable_class)
    recorder = Recorder(search.predictor)
    search.predictor = cf.Predictor(recorder.labels, recorder.scores)
    return model, schema, search, recorder, favourable


def run(name: str, prepared_model, decisions: int, pick: str) -> dict:
    model, schema, search, recorder, favourable = prepared_model
    replayed = credit.applicants(4000, seed=11)[credit.FEATURES]
    adverse = replayed[model.predict(replayed).astype(str) != favourable]
    if pick == "most adverse":
        positive = [str(c) for c in model.classes_].index(str(schema.target.positive_class))
        adverse = adverse.iloc[(-model.predict_proba(adverse)[:, positive]).argsort()]
    rows = [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in adverse.head(decisions + WARMUP).to_dict(orient="records")
    ]
    timed, raw, found, sparsity, scored = [], [], [], [], []
    for n, row in enumerate(rows):
        recorder.frames = []
        began = time.perf_counter()
        result = search.explain(row, seed=n, k=K)
        elapsed = time.perf_counter() - began
        if result.error:
            raise SystemExit(f"{name}: decision {n}: {result.error}")
        frames = recorder.frames
        began = time.perf_counter()
        for batch in frames:
            model.predict(batch)
        raw_elapsed = time.perf_counter() - began
        if result.counterfactuals:
            check = model.predict(schema.frame([c.inputs for c in result.counterfactuals]))
            if not (check.astype(str) == favourable).all():
                raise SystemExit(f"{name}: decision {n}: a counterfactual does not flip")
        if n < WARMUP:
            continue
        timed.append(elapsed)
        raw.append(raw_elapsed)
        found.append(len(result.counterfactuals))
        sparsity.extend(c.sparsity for c in result.counterfactuals)
        scored.append(sum(len(f) for f in frames))
    return {
        "name": f"{LABELS.get(name, name)}, {pick}",
        "p50": statistics.median(timed),
        "p95": p95(timed),
        "raw_p50": statistics.median(raw),
        "raw_p95": p95(raw),
        "found": statistics.mean(found),
        "full": sum(f == K for f in found) / len(found),
        "sparsity": statistics.mean(sparsity) if sparsity else float("nan"),
        "rows": statistics.median(scored),
        "decisions": len(timed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=50)
    parser.add_argument("--models", default="gbm,xgb")
    args = parser.parse_args()
    print(
        f"Counterfactuals, k = {K}, per adverse decision ({args.decisions} each, after "
        f"{WARMUP} warm-up), one thread; raw = the same batches sent to model.predict() alone"
    )
    header = (
        f"{'model, decisions':<46} {'search p50 / p95 s':>19} {'raw p50 / p95 s':>16} {'rows':>6} "
        f"{'found':>5} {'all 3':>6} {'changes':>7}  target p95 <= {TARGET_P95_S:.0f} s"
    )
    print(header)
    for name in args.models.split(","):
        model = prepared(name.strip())
        for pick in ("first adverse", "most adverse"):
            report(run(name.strip(), model, args.decisions, pick))


def report(figures: dict) -> None:
    verdict = "met" if figures["p95"] <= TARGET_P95_S else "NOT met"
    print(
        f"{figures['name']:<46} "
        f"{figures['p50']:>8.2f} / {figures['p95']:<8.2f} "
        f"{figures['raw_p50']:>7.2f} / {figures['raw_p95']:<6.2f} "
        f"{figures['rows']:>6.0f} {figures['found']:>5.2f} {figures['full']:>6.0%} "
        f"{figures['sparsity']:>7.2f}  {verdict}",
        flush=True,
    )


if __name__ == "__main__":
    main()
