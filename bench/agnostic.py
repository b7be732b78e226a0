"""Model-agnostic SHAP benchmark: a one-hot + scaled MLP pipeline, Attest's engine beside shap.

Run with `.venv/bin/python bench/agnostic.py` (or `make bench`). Not a test: it prints
figures beside a raw baseline measured in the same run. No database: the engine alone.

1. German credit (tests/data, 13 categorical and 7 numeric features), 700 rows to train a
   pipeline of a one-hot encoder and a standard scaler (a ColumnTransformer) and an MLP
   (16 hidden units), 100 for the background, --rows rows to explain.
2. Attest: `engine.explain` with the SHAP backend, which picks the model-agnostic
   `PermutationExplainer` (500 evaluations a row, the whole background, a seed a row) and
   assembles the preprocessing's output feature by feature
   (`explain.features.PerFeatureTransform`), with its additivity check against the
   pipeline's own output.
3. Raw, in the same run: `shap.PermutationExplainer` on the whole pipeline's
   `predict_proba` over the same rows as numbers, the same background, evaluations and
   seeds (what the engine did before, each evaluated row transformed again).
4. Printed: ms a decision each, the ratio, and the largest difference between the two
   attributions (the same permutations: equal up to float rounding).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pipeline_and_rows(rows: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from tests.datasets import GERMAN_CATEGORICAL, GERMAN_NUMERIC, german_credit

    features = GERMAN_CATEGORICAL + GERMAN_NUMERIC
    frame = german_credit()
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), GERMAN_CATEGORICAL),
                        ("numeric", StandardScaler(), GERMAN_NUMERIC),
                    ]
                ),
            ),
            ("model", MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0)),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the MLP's convergence warning
        model.fit(frame[features].iloc[:700], frame["credit"].iloc[:700])
    background = frame[features].iloc[700:800].reset_index(drop=True)
    explained = frame[features].iloc[800 : 800 + rows]
    return model, background, explained, features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()

    import shap

    from explain import engine
    from explain.backends import backend
    from explain.schema import parse_schema
    from explain.shap_backend import ShapExplainer
    from tests.datasets import german_schema

    model, background, explained, features = pipeline_and_rows(args.rows)
    schema = parse_schema(german_schema())
    context = engine.ModelContext(
        model=model,
        schema=schema,
        background=background,
        background_sha256="b" * 64,
        artifact_sha256="a" * 64,
    )
    rows = [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in explained.to_dict(orient="records")
    ]
    seeds = list(range(len(rows)))
    shap_backend = backend("shap")
    explainer = ShapExplainer(context)
    engine.explain(context, shap_backend, rows[:1], seeds[:1], {"explainer": explainer})  # warm

    began = time.perf_counter()
    results = engine.explain(context, shap_backend, rows, seeds, {"explainer": explainer})
    attest = (time.perf_counter() - began) / len(rows)
    assert all(r.ok and r.quality["additivity_ok"] for r in results)

    bad = list(model.classes_).index("bad")
    codes = explainer.codes

    def probability(array: np.ndarray) -> np.ndarray:
        return model.predict_proba(codes.decode(array))[:, bad]

    raw_explainer = shap.PermutationExplainer(
        probability,
        shap.maskers.Independent(explainer.background_array, max_samples=len(background)),
    )
    encoded = codes.encode(schema.frame(rows))
    raw_values = []
    began = time.perf_counter()
    for row, seed in zip(encoded, seeds, strict=True):
        np.random.seed(seed)
        answer = raw_explainer(row.reshape(1, -1), max_evals=explainer.max_evals, silent=True)
        raw_values.append(answer.values[0])
    raw = (time.perf_counter() - began) / len(rows)

    ours = np.array([[r.attributions[name] for name in features] for r in results])
    difference = float(np.abs(ours - np.array(raw_values)).max())
    assembled = "yes" if explainer.assembly is not None else "no"
    title = f"one-hot + scaled MLP, German credit, {len(rows)} rows"
    print(f"{title}, {explainer.max_evals} evaluations a row")
    print(f"preprocessing assembled feature by feature: {assembled}")
    header = ("figure", "Attest", "raw (shap, whole pipeline)", "ratio")
    row = (
        "permutation SHAP, ms a decision",
        f"{attest * 1000:.1f} ms",
        f"{raw * 1000:.1f} ms",
        f"{raw / attest:.1f}x faster",
    )
    widths = [max(len(a), len(b)) for a, b in zip(header, row, strict=True)]
    for line in (header, row):
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    print(f"largest attribution difference: {difference:.2e}")


if __name__ == "__main__":
    main()
