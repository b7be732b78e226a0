"""Real public data sets, committed under tests/data/ (sources and CC BY 4.0 credits there)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd

TEST_DATA = Path(__file__).resolve().parent / "data"

GERMAN_CATEGORICAL = [
    "status",
    "credit_history",
    "purpose",
    "savings",
    "employment",
    "personal_status",
    "other_debtors",
    "property",
    "installment_plans",
    "housing",
    "skill_level",
    "telephone",
    "foreign_worker",
]
GERMAN_NUMERIC = [
    "month",
    "credit_amount",
    "investment_as_income_percentage",
    "residence_since",
    "age",
    "number_of_credits",
    "people_liable_for",
]


def _path(*parts: str) -> Path:
    """A committed data file; a missing one is an error, never a skip."""
    path = TEST_DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"test data file {path} is missing (see tests/data/README.md)")
    return path


@cache
def german_credit() -> pd.DataFrame:
    """1,000 applicants; `credit` is "good"/"bad" (the file codes 1 = good, 2 = bad)."""
    frame = pd.read_csv(_path("german_credit", "german_credit.csv"))
    frame["credit"] = frame["credit"].map({1: "good", 2: "bad"})
    return frame


def german_schema() -> dict:
    frame = german_credit()
    features = [
        {"name": name, "type": "categorical", "categories": sorted(frame[name].unique().tolist())}
        for name in GERMAN_CATEGORICAL
    ] + [{"name": name, "type": "numeric"} for name in GERMAN_NUMERIC]
    for feature in features:
        if feature["name"] in ("age", "personal_status"):
            feature["protected"] = True
    return {
        "features": features,
        "target": {"type": "classification", "classes": ["good", "bad"], "positive_class": "bad"},
    }


# Adult's features (the target is `income`; `split` says train or test).
ADULT_CATEGORICAL = [
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
]
ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]


@cache
def adult() -> pd.DataFrame:
    """8,000 rows of Adult: 5,000 of UCI's training split, then 3,000 of its test split."""
    return pd.read_csv(_path("adult", "adult_sample.csv"), skipinitialspace=True)
