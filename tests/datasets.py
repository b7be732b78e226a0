"""The real public data sets in ../shared/data, read by path (never copied into the repo)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

SHARED_DATA = Path(
    os.environ.get("ATTEST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)

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
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data set not found at {path}")
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


@cache
def adult() -> pd.DataFrame:
    return pd.read_csv(_path("adult", "adult.csv"), skipinitialspace=True)
