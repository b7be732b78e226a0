"""A synthetic but realistic consumer-credit data set with known effects.

Default risk rises with the debt ratio, prior defaults, the loan-to-income
ratio and short employment; it falls with income, age (mildly) and a
guarantor; some purposes are riskier than others. Sex is recorded as a
protected attribute and has no effect on the true risk, so any disparity a
model shows is learned, not real. No Django here.

The outcome is drawn from the same features the applicants are made of, with
effects strong enough to tell good risks from bad ones: about 27 % of loans go
bad, and the demo's model reaches a ROC AUC of 0.84 on held-out applicants. Its
own decision rule, predict(), declines an applicant whose probability of going
bad is 0.5 or more: about one in five before the downturn, more after it (see
`economic_shock`).

The schema says what an applicant could change, for counterfactuals ("what would
change the decision"): income and years of employment only up, the loan amount and
the debt ratio only down (on steps of 100 EUR, 500 EUR and 0.01); previous defaults
are the past (immutable); age and sex are protected, so never changed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PURPOSES = ["car", "education", "business", "home_improvement", "debt_consolidation"]
PURPOSE_RISK = {
    "car": 0.0,
    "education": 0.4,
    "business": 0.95,
    "home_improvement": -0.3,
    "debt_consolidation": 0.7,
}
HOUSING = ["rent", "own", "mortgage"]
HOUSING_RISK = {"rent": 0.5, "own": -0.5, "mortgage": 0.0}

SCHEMA = {
    "features": [
        {
            "name": "age",
            "type": "integer",
            "min": 18,
            "max": 100,
            "protected": True,
            "label": "Age (years)",
        },
        {
            "name": "sex",
            "type": "categorical",
            "categories": ["female", "male"],
            "protected": True,
            "sensitive": True,
            "label": "Sex",
        },
        {
            "name": "income",
            "type": "numeric",
            "min": 0,
            "sensitive": True,
            "label": "Annual income (EUR)",
            "direction": "increase",  # what an applicant could change (counterfactuals)
            "step": 100,
        },
        {
            "name": "debt_ratio",
            "type": "numeric",
            "min": 0,
            "max": 3,
            "label": "Debt-to-income ratio",
            "direction": "decrease",
            "step": 0.01,
        },
        {
            "name": "employment_years",
            "type": "integer",
            "min": 0,
            "max": 60,
            "label": "Years in current employment",
            "direction": "increase",
        },
        {
            "name": "loan_amount",
            "type": "numeric",
            "min": 500,
            "max": 100000,
            "label": "Loan amount (EUR)",
            "direction": "decrease",
            "step": 500,
        },
        {
            "name": "loan_purpose",
            "type": "categorical",
            "categories": PURPOSES,
            "label": "Loan purpose",
        },
        {"name": "housing", "type": "categorical", "categories": HOUSING, "label": "Housing"},
        {
            "name": "prior_defaults",
            "type": "integer",
            "min": 0,
            "max": 10,
            "label": "Previous defaults",
            "immutable": True,  # the past does not change
        },
        {"name": "has_guarantor", "type": "boolean", "label": "Has a guarantor"},
    ],
    "target": {
        "type": "classification",
        "classes": ["good", "bad"],
        "positive_class": "bad",
        "favourable": "good",
    },
}
FEATURES = [f["name"] for f in SCHEMA["features"]]
CATEGORICAL = [f["name"] for f in SCHEMA["features"] if f["type"] == "categorical"]
NUMERIC = [name for name in FEATURES if name not in CATEGORICAL]


def applicants(n: int, seed: int = 0) -> pd.DataFrame:
    """`n` loan applicants, with the true default probability and a sampled outcome."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(41, 12, n), 18, 85).round().astype(int)
    sex = rng.choice(["female", "male"], n)
    employment = np.clip(rng.exponential(6, n), 0, np.maximum(age - 17, 0)).round().astype(int)
    income = np.round(
        np.exp(rng.normal(10.5, 0.45, n)) * (1 + 0.01 * np.minimum(employment, 20)), 2
    )
    debt_ratio = np.round(np.clip(rng.gamma(2.0, 0.18, n), 0, 3), 3)
    purpose = rng.choice(PURPOSES, n, p=[0.3, 0.12, 0.1, 0.2, 0.28])
    loan_amount = np.round(
        np.clip(
            income * rng.uniform(0.05, 0.6, n) * np.where(purpose == "business", 1.6, 1.0),
            500,
            100000,
        ),
        -1,
    )
    housing = rng.choice(HOUSING, n, p=[0.4, 0.25, 0.35])
    prior_defaults = rng.poisson(0.3, n).clip(0, 10)
    has_guarantor = rng.random(n) < 0.15
    logit = (
        -1.5
        + 3.5 * (debt_ratio - 0.36)
        + 1.45 * prior_defaults
        + 2.6 * (loan_amount / income - 0.3)
        - 1.45 * (np.log(income) - 10.5)
        - 0.1 * np.minimum(employment, 15)
        - 0.012 * (age - 41)
        - 1.3 * has_guarantor
        + np.vectorize(PURPOSE_RISK.get)(purpose)
        + np.vectorize(HOUSING_RISK.get)(housing)
    )
    probability = 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "age": age,
            "sex": sex,
            "income": income,
            "debt_ratio": debt_ratio,
            "employment_years": employment,
            "loan_amount": loan_amount,
            "loan_purpose": purpose,
            "housing": housing,
            "prior_defaults": prior_defaults,
            "has_guarantor": has_guarantor,
        }
    )
    frame["true_probability"] = probability
    frame["outcome"] = np.where(rng.random(n) < probability, "bad", "good")
    return frame


def economic_shock(frame: pd.DataFrame) -> pd.DataFrame:
    """The same applicants after a downturn: incomes 25 % lower, debt ratios 40 % higher.

    The demo's most recent days come from here, so monitoring has real input
    drift (and a rise in predicted risk) to find.
    """
    shocked = frame.copy()
    shocked["income"] = (shocked["income"] * 0.75).round(2)
    shocked["debt_ratio"] = (shocked["debt_ratio"] * 1.4).clip(0, 3).round(3)
    return shocked


def train_model(frame: pd.DataFrame, seed: int = 0):
    """A gradient-boosting pipeline with one-hot categoricals, as a bank might deploy."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    features = frame[FEATURES]
    prep = ColumnTransformer(
        [("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)],
        remainder="passthrough",
    )
    model = Pipeline(
        [
            ("prep", prep),
            ("model", GradientBoostingClassifier(n_estimators=120, max_depth=3, random_state=seed)),
        ]
    )
    return model.fit(features, frame["outcome"])


def holdout_metrics(model, frame: pd.DataFrame) -> dict[str, float]:
    """The model card's figures on applicants it was not trained on: ROC AUC, the
    share its decision rule declines, and the share of loans that went bad."""
    from sklearn.metrics import roc_auc_score

    features = frame[FEATURES]
    bad = (frame["outcome"] == "bad").to_numpy()
    scores = model.predict_proba(features)[:, list(model.classes_).index("bad")]
    return {
        "roc_auc": round(float(roc_auc_score(bad, scores)), 3),
        "decline_rate": round(float(np.mean(model.predict(features) == "bad")), 3),
        "bad_rate": round(float(bad.mean()), 3),
    }


def decision_payloads(model, frame: pd.DataFrame, *, model_name: str, version: str, start, spacing):
    """Decisions as a production system would send them, one per applicant.

    The prediction is the model's own decision rule (predict(): "bad", declined,
    when the score is 0.5 or more), the one Attest applies to the background sample.
    """
    features = frame[FEATURES]
    positive = list(model.classes_).index("bad")
    scores = model.predict_proba(features)[:, positive]
    predictions = model.predict(features)
    rows = features.to_dict(orient="records")
    for i, (row, score, prediction) in enumerate(zip(rows, scores, predictions, strict=True)):
        inputs = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        yield {
            "model": model_name,
            "version": version,
            "request_id": f"loan-{i + 1:06d}",
            "subject_ref": f"c-{(i * 7919) % 1_000_003:06x}",
            "inputs": inputs,
            "prediction": str(prediction),
            "score": round(float(score), 6),
            "predicted_at": (start + spacing * i).isoformat(),
            "metadata": {"channel": ["branch", "online", "broker"][i % 3]},
        }
