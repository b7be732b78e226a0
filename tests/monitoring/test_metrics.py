"""The metrics of a window against independent scipy / scikit-learn / fairlearn computations,
on decisions recorded through the real services (German credit, Adult)."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
import skops.io
from django.db.models import OuterRef, Subquery
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    selection_rate,
)
from scipy import stats
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from auditapp.accounts import roles
from auditapp.decisions.models import Decision, Outcome
from auditapp.decisions.outcomes import record_outcomes
from auditapp.decisions.services import record_decisions
from auditapp.monitoring import metrics
from auditapp.monitoring.configuration import configure_monitoring
from auditapp.monitoring.models import MonitoringSettings
from auditapp.registry.services import VersionUpload, register_model_version
from explain import tasks as explain_tasks
from explain.schema import parse_schema
from tests.datasets import adult, german_credit
from tests.monitoring.conftest import FEATURES, a_day, plain, shifted


def window(day):
    return day, day + timedelta(days=1)


def test_drift_is_flagged_on_a_shifted_stream_and_nowhere_else(german_version, stream, unseen):
    day = a_day(3)
    stream(shifted(unseen), day, "shifted")

    result = metrics.compute_window_metrics(german_version, *window(day))

    assert result["decisions"] == 300
    assert result["reference"] == {
        "kind": "background",
        "description": "background sample (300 rows)",
        "rows": 300,
    }
    drifted = {name for name, entry in result["drift"].items() if entry["drifted"]}
    assert drifted == {"credit_amount", "age"}
    assert result["drift"]["credit_amount"]["psi"] > 1.0
    assert result["drift"]["credit_amount"]["ks_p"] < 1e-10
    background = german_credit()["age"].iloc[:300].to_numpy(dtype=float)
    independent = stats.ks_2samp(background, shifted(unseen)["age"].to_numpy(dtype=float))
    assert result["drift"]["age"]["ks_p"] == pytest.approx(independent.pvalue, rel=1e-9)
    assert result["drift"]["age"]["ks_statistic"] == pytest.approx(independent.statistic)
    assert {"psi", "chi2_p", "drifted"} <= set(result["drift"]["purpose"])
    json.dumps(result)  # JSON-serialisable as it is


def test_an_unshifted_stream_is_not_flagged(german_version, stream, unseen):
    day = a_day(3)
    stream(unseen, day, "plain")

    result = metrics.compute_window_metrics(german_version, *window(day))

    assert result["decisions"] == 300
    assert [n for n, e in result["drift"].items() if e["drifted"]] == []
    assert max(e["psi"] for e in result["drift"].values()) < 0.2
    assert result["score_drift"]["psi"] < 0.2
    assert result["score_drift"]["drifted"] is False


def test_erased_inputs_are_not_drift(german_version, stream, unseen):
    """A window recomputed after retention or a person's erasure read each erased decision's
    inputs as missing values: the categoricals' "null" share jumped from 0 to the erased
    share, a PSI far above 0.2, and drift alerts opened on data that had not moved. Erased
    decisions now count in the window (scores, performance) but not in input drift, nor in
    fairness, where they had been a group of their own ("missing")."""
    from auditapp.decisions import erasure
    from auditapp.decisions.models import Erasure

    day = a_day(3)
    decisions = stream(unseen, day, "plain")
    before = metrics.compute_window_metrics(german_version, *window(day))
    plan = erasure.plan_erasure(
        Decision.objects.filter(pk__in=[d.pk for d in decisions[: len(decisions) // 2]]),
        cause=Erasure.RETENTION,
        reason="test",
    )
    erasure.erase(roles.system_actor(), plan, via="command")

    after = metrics.compute_window_metrics(german_version, *window(day))

    assert after["decisions"] == before["decisions"] == 300
    assert [n for n, e in after["drift"].items() if e["drifted"]] == []
    assert after["drift"]["purpose"]["current_rates"].get("null", 0) == 0
    assert after["drift"]["age"]["missing"] == 0
    assert after["score_drift"] == before["score_drift"]
    # nor in fairness: an erased decision's group is unknown, not a group "missing"
    for name in ("age", "personal_status"):
        assert "missing" not in after["fairness"][name]["counts"], after["fairness"][name]
        assert sum(after["fairness"][name]["counts"].values()) == 150


def test_categorical_drift_is_chi_squared_on_the_category_counts(german_version, stream, unseen):
    day = a_day(3)
    moved = unseen.copy()
    moved.loc[: len(moved) // 2, "purpose"] = "A49"  # half the loans are now for business
    stream(moved, day, "purpose")

    entry = metrics.compute_window_metrics(german_version, *window(day))["drift"]["purpose"]

    reference = german_credit()["purpose"].iloc[:300].value_counts()
    current = moved["purpose"].value_counts()
    categories = sorted(set(reference.index) | set(current.index))
    table = np.vstack(
        [reference.reindex(categories, fill_value=0), current.reindex(categories, fill_value=0)]
    )
    assert entry["chi2_p"] == pytest.approx(stats.chi2_contingency(table).pvalue, rel=1e-9)
    assert entry["drifted"] is True
    assert entry["current_rates"]["A49"] == pytest.approx(current["A49"] / len(moved))


def test_score_and_attribution_drift_follow_the_shift(german_version, stream, unseen):
    day = a_day(3)
    decisions = stream(shifted(unseen), day, "shifted")
    explain_tasks.explain_batch.run(german_version.pk, "shap", [d.pk for d in decisions])

    result = metrics.compute_window_metrics(german_version, *window(day))

    attribution = result["attribution_drift"]
    assert attribution["explained"] == 300
    amount = attribution["mean_abs_shap"]["credit_amount"]
    assert amount["change"] == pytest.approx(amount["current"] - amount["reference"])
    assert 0 < attribution["ranking_ndcg"] <= 1
    reference = MonitoringSettings.objects.get(model_version=german_version).reference_cache
    truth = [[reference["mean_abs_shap"][n] for n in german_version.parsed_schema.names]]
    now = [[attribution["mean_abs_shap"][n]["current"] for n in german_version.parsed_schema.names]]
    assert attribution["ranking_ndcg"] == pytest.approx(skm.ndcg_score(truth, now))
    assert reference["shap_rows"] == 200
    assert result["explanations"]["done"] == 300
    assert result["explanations"]["failure_rate"] == 0.0


def test_performance_equals_scikit_learn(german_version, stream, outcomes, unseen):
    day = a_day(4)
    decisions = stream(unseen, day, "perf")
    labelled = decisions[:250]  # the rest have no outcome yet
    outcomes(labelled, unseen["credit"].iloc[:250])

    performance = metrics.compute_window_metrics(german_version, *window(day))["performance"]

    y_true = (unseen["credit"].iloc[:250] == "bad").to_numpy(dtype=int)
    y_pred = np.array([d.prediction == "bad" for d in labelled], dtype=int)
    scores = np.array([d.score for d in labelled])
    assert performance["outcomes"] == 250
    assert performance["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert performance["precision"] == pytest.approx(skm.precision_score(y_true, y_pred))
    assert performance["recall"] == pytest.approx(skm.recall_score(y_true, y_pred))
    assert performance["f1"] == pytest.approx(skm.f1_score(y_true, y_pred))
    assert performance["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, scores))
    assert performance["brier"] == pytest.approx(skm.brier_score_loss(y_true, scores))
    assert performance["reference_roc_auc"] == 0.78  # the card's training metric
    assert performance["roc_auc_drop"] == pytest.approx(0.78 - performance["roc_auc"])
    assert sum(b["n"] for b in performance["calibration"]) == 250
    for entry in performance["calibration"]:
        inside = (scores >= entry["bin_start"]) & (scores < entry["bin_end"])
        assert entry["mean_score"] == pytest.approx(scores[inside].mean())
        assert entry["observed_rate"] == pytest.approx(y_true[inside].mean())


def test_without_outcomes_there_is_no_performance(german_version, stream, unseen):
    day = a_day(3)
    stream(unseen.head(50), day, "few")

    assert metrics.compute_window_metrics(german_version, *window(day))["performance"] is None


def test_an_empty_window_has_no_figures_but_does_not_fail(german_version):
    result = metrics.compute_window_metrics(german_version, *window(a_day(30)))

    assert result["decisions"] == 0
    assert result["performance"] is None
    assert result["fairness"] == {}
    assert result["drift"]["age"]["psi"] is None


# --- fairness on Adult -------------------------------------------------------------------

ADULT_CATEGORICAL = [
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
]
ADULT_NUMERIC = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
ADULT_FEATURES = ADULT_CATEGORICAL + ADULT_NUMERIC
ADULT_ROWS = 3000


@pytest.fixture(scope="module")
def adult_data():
    frame = adult()
    train = frame[frame["split"] == "train"].iloc[:5000]
    stream = frame[frame["split"] == "test"].iloc[:ADULT_ROWS].reset_index(drop=True)
    prep = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ADULT_CATEGORICAL),
            ("numeric", StandardScaler(), ADULT_NUMERIC),
        ]
    )
    model = Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=500))])
    model.fit(train[ADULT_FEATURES], train["income"])
    schema = {
        "features": [
            {
                "name": n,
                "type": "categorical",
                "categories": sorted(frame[n].unique().tolist()),
                **({"protected": True} if n in ("race", "sex") else {}),
            }
            for n in ADULT_CATEGORICAL
        ]
        + [
            {"name": n, "type": "numeric", **({"protected": True} if n == "age" else {})}
            for n in ADULT_NUMERIC
        ],
        "target": {
            "type": "classification",
            "classes": ["<=50K", ">50K"],
            "positive_class": ">50K",
        },
    }
    return model, schema, train, stream


@pytest.fixture
def adult_version(adult_data, ml_engineer):
    model, schema, train, _ = adult_data
    upload = VersionUpload(
        name="adult",
        version="1",
        artifact=skops.io.dumps(model),
        artifact_format="skops",
        schema=schema,
        background=train[ADULT_FEATURES].head(200).to_csv(index=False).encode(),
    )
    actor = roles.Actor(user=ml_engineer)
    version = register_model_version(actor, upload)
    # The positive class ">50K" is the favourable one here; age in the usual bands.
    configure_monitoring(
        actor, version, {"favourable_class": ">50K", "fairness_groups": {"age": [25, 40, 60]}}
    )
    return version


def record_adult(model, part, user, start, *, prefix: str, step: int):
    """Record the model's own decisions on `part`, `step` seconds apart from `start`:
    (its predictions, the ingestion results)."""
    predictions = model.predict(part[ADULT_FEATURES])
    scores = model.predict_proba(part[ADULT_FEATURES])[:, 1]
    items = [
        {
            "model": "adult",
            "version": "1",
            "request_id": f"{prefix}-{i}",
            "inputs": {k: plain(v) for k, v in row.items()},
            "prediction": plain(predictions[i]),
            "score": float(scores[i]),
            "predicted_at": (start + timedelta(seconds=step * i + 1)).isoformat(),
        }
        for i, row in enumerate(part[ADULT_FEATURES].to_dict(orient="records"))
    ]
    return predictions, record_decisions(roles.Actor(user=user), {"decisions": items})


def test_fairness_equals_fairlearn_on_adult(adult_data, adult_version, ml_engineer, outcomes):
    model, _, _, frame = adult_data
    day = a_day(5)
    predictions, results = record_adult(model, frame, ml_engineer, day, prefix="adult", step=1)
    decisions = list(Decision.objects.filter(pk__in=[r["id"] for r in results]).order_by("pk"))
    outcomes(decisions[:2000], frame["income"].iloc[:2000])

    fairness = metrics.compute_window_metrics(adult_version, *window(day))["fairness"]

    assert set(fairness) == {"race", "sex", "age"}
    selected = (predictions == ">50K").astype(int)
    truth = (frame["income"].iloc[:2000] == ">50K").to_numpy(dtype=int)
    age_groups = np.select(
        [frame["age"] < 25, frame["age"] < 40, frame["age"] < 60],
        ["< 25", "25\u201340", "40\u201360"],
        "≥ 60",
    )
    for name, groups in (("sex", frame["sex"]), ("race", frame["race"]), ("age", age_groups)):
        groups = np.asarray(groups, dtype=object)
        entry = fairness[name]
        by_group = MetricFrame(
            metrics=selection_rate, y_true=selected, y_pred=selected, sensitive_features=groups
        ).by_group
        assert entry["selection_rate"] == pytest.approx(by_group.to_dict())
        assert entry["demographic_parity_difference"] == pytest.approx(
            demographic_parity_difference(selected, selected, sensitive_features=groups)
        )
        ratio = demographic_parity_ratio(selected, selected, sensitive_features=groups)
        assert entry["disparate_impact_ratio"] == pytest.approx(ratio)
        assert entry["four_fifths_ok"] is bool(ratio >= 0.8)
        assert entry["equalized_odds_difference"] == pytest.approx(
            equalized_odds_difference(truth, selected[:2000], sensitive_features=groups[:2000])
        )
        assert entry["selected_class"] == ">50K"
    # Adult's well-known disparity: women are selected far less often than men.
    assert fairness["sex"]["disparate_impact_ratio"] < 0.5
    assert fairness["sex"]["four_fifths_ok"] is False
    assert fairness["age"]["group_edges"] == [25.0, 40.0, 60.0]
    assert fairness["sex"]["counts"] == frame["sex"].value_counts().to_dict()


def test_numeric_protected_groups_default_to_reference_quartiles(german_version, stream, unseen):
    day = a_day(3)
    stream(unseen, day, "groups")

    entry = metrics.compute_window_metrics(german_version, *window(day))["fairness"]["age"]

    quartiles = np.quantile(german_credit()["age"].iloc[:300], [0.25, 0.5, 0.75])
    assert entry["group_edges"] == pytest.approx(np.unique(quartiles).tolist())
    assert sum(entry["counts"].values()) == 300
    assert entry["selected_class"] == "good"  # not the positive (adverse) class "bad"


def test_groups_declared_in_the_schema_bin_a_numeric_protected_attribute():
    schema = parse_schema(
        {
            "features": [
                {"name": "age", "type": "integer", "protected": True, "groups": [25, 40, 60]},
                {"name": "income", "type": "numeric"},
            ],
            "target": {"type": "classification", "classes": ["good", "bad"]},
        }
    )
    age = schema.features[0]

    assert metrics.group_edges(age, schema, {}, None) == [25.0, 40.0, 60.0]
    assert metrics.group_edges(age, schema, {"age": [30, 50]}, None) == [30.0, 50.0]
    groups = metrics.numeric_groups(np.array([18.0, 25.0, 39.0, 61.0, np.nan]), [25.0, 40.0, 60.0])
    assert list(groups) == ["< 25", "25\u201340", "25\u201340", "\u2265 60", "missing"]


def test_a_period_of_decisions_can_be_the_reference(german_version, stream, unseen, ml_engineer):
    reference_day, day = a_day(6), a_day(3)
    stream(unseen, reference_day, "reference")
    stream(unseen, day, "same")
    configure_monitoring(
        roles.Actor(user=ml_engineer),
        german_version,
        {
            "reference": "period",
            "reference_from": reference_day.isoformat(),
            "reference_to": (reference_day + timedelta(days=1)).isoformat(),
        },
    )

    result = metrics.compute_window_metrics(german_version, *window(day))

    assert result["reference"]["kind"] == "period"
    assert result["reference"]["rows"] == 300
    # The very same applicants: no drift at all.
    assert all(entry["psi"] == pytest.approx(0.0, abs=1e-12) for entry in result["drift"].values())
    assert result["score_drift"]["psi"] == pytest.approx(0.0, abs=1e-12)


def test_the_module_keeps_features_in_schema_order(german_version):
    schema = german_version.parsed_schema
    assert list(metrics.input_drift(schema, *(2 * [_tiny(schema)]))) == FEATURES


def _tiny(schema):
    rows = german_credit()[FEATURES].head(5).to_dict(orient="records")
    return metrics.observations(schema, rows, [0.1] * 5, ["good"] * 5)


def test_a_window_where_everyone_is_in_one_group_and_decided_alike_has_its_fairness():
    """fairlearn refused the one distinct row as a 2-D feature array; the window then lost
    its whole fairness section."""
    selected = np.array([True, True, True])
    groups = np.array(["male"] * 3, dtype=object)
    entry = metrics._fairness_entry(selected, selected, np.zeros(3, dtype=bool), groups)
    assert entry["selection_rate"] == {"male": 1.0} and entry["counts"] == {"male": 3}
    assert entry["disparate_impact_ratio"] == 1.0
    assert entry["demographic_parity_difference"] == 0.0


def test_a_period_fetched_once_gives_each_day_the_figures_of_that_day_alone(
    adult_data, adult_version, ml_engineer, outcomes
):
    """The compliance report fetches its period once, splits it by day and builds fairlearn's
    frames once for all days (the day a control feature): each day's figures are exactly
    those monitoring computes for that day alone, and fairlearn's own on its decisions. The
    last day has women only and no outcome: one group there, groups of two elsewhere."""
    model, _, _, frame = adult_data
    start = a_day(5)
    days = [(start + timedelta(days=d), start + timedelta(days=d + 1)) for d in range(3)]
    rest = frame.iloc[2000:]
    parts = [frame.iloc[:1000], frame.iloc[1000:2000], rest[rest["sex"] == "Female"]]
    labelled = 600  # outcomes on the first two days' first decisions
    for (low, _), part in zip(days, parts, strict=True):
        _, results = record_adult(model, part, ml_engineer, low, prefix=f"adult-{low:%d}", step=10)
        if part is not parts[-1]:
            ids = [r["id"] for r in results[:labelled]]
            decided = list(Decision.objects.filter(pk__in=ids).order_by("pk"))
            outcomes(decided, part["income"].iloc[:labelled])

    period = metrics.fetch_period(adult_version, days[0][0], days[-1][1], "day")
    together = metrics.compute_windows_metrics(adult_version, period, days)

    for (low, high), figures, part in zip(days, together, parts, strict=True):
        assert figures == metrics.compute_window_metrics(adult_version, low, high)
        assert figures["decisions"] == len(part)
        selected = (model.predict(part[ADULT_FEATURES]) == ">50K").astype(int)
        age_groups = np.select(
            [part["age"] < 25, part["age"] < 40, part["age"] < 60],
            ["< 25", "25\u201340", "40\u201360"],
            "≥ 60",
        )
        for name, groups in (("sex", part["sex"]), ("race", part["race"]), ("age", age_groups)):
            groups = np.asarray(groups, dtype=object)
            entry = figures["fairness"][name]
            by_group = MetricFrame(
                metrics=selection_rate, y_true=selected, y_pred=selected, sensitive_features=groups
            ).by_group
            assert entry["selection_rate"] == pytest.approx(by_group.to_dict())
            assert entry["demographic_parity_difference"] == pytest.approx(
                demographic_parity_difference(selected, selected, sensitive_features=groups)
            )
            assert entry["disparate_impact_ratio"] == pytest.approx(
                demographic_parity_ratio(selected, selected, sensitive_features=groups)
            )
            if part is parts[-1]:
                assert entry["equalized_odds_difference"] is None
                continue
            truth = (part["income"].iloc[:labelled] == ">50K").to_numpy(dtype=int)
            assert entry["equalized_odds_difference"] == pytest.approx(
                equalized_odds_difference(
                    truth, selected[:labelled], sensitive_features=groups[:labelled]
                )
            )
    women = together[-1]["fairness"]["sex"]
    assert women["counts"] == {"Female": len(parts[-1])}
    assert (women["disparate_impact_ratio"], women["demographic_parity_difference"]) == (1.0, 0.0)
    assert together[0]["fairness"]["sex"]["disparate_impact_ratio"] < 0.5
    # The period itself, from the same rows: the pooled figures.
    (pooled,) = metrics.compute_windows_metrics(adult_version, period, [period_bounds(days)])
    assert pooled == metrics.compute_window_metrics(adult_version, *period_bounds(days))
    assert pooled["decisions"] == sum(map(len, parts))


def period_bounds(days):
    return days[0][0], days[-1][1]


def test_a_fetched_period_is_what_the_decisions_and_their_latest_outcomes_say(
    german_version, stream, unseen, outcomes, ml_engineer
):
    """fetch_period reads moments as UTC text and the latest outcomes in a query of their
    own: the same values as the decisions' columns and, per decision, the outcome with the
    latest observed_at (ties: the latest recorded), as a correlated subquery picks it."""
    day = a_day(3)
    decided = stream(unseen.iloc[:40], day, "fetched")
    outcomes(decided[:20], ["good"] * 20)
    # corrected, observed an hour after the first: the correction counts; observed before
    # the first (recorded after it): the first still counts
    later = [(d, "bad", timedelta(hours=2)) for d in decided[:5]]
    record_outcomes(
        roles.Actor(user=ml_engineer),
        {
            "outcomes": [
                {
                    "decision_id": d.pk,
                    "model": d.registered_model.name,
                    "outcome": label,
                    "observed_at": (d.predicted_at + after).isoformat(),
                }
                for d, label, after in [*later, (decided[10], "bad", timedelta(minutes=30))]
            ]
        },
    )

    period = metrics.fetch_period(german_version, day, day + timedelta(days=1), "day")

    latest = Outcome.objects.filter(decision=OuterRef("pk")).order_by("-observed_at", "-id")
    expected = list(
        Decision.objects.filter(model_version=german_version)
        .annotate(latest=Subquery(latest.values("outcome")[:1]))
        .order_by("predicted_at", "id")
        .values_list("predicted_at", "inputs", "score", "prediction", "latest")
    )
    assert period.moments == [row[0] for row in expected]
    assert all(m.utcoffset() == timedelta(0) for m in period.moments)
    assert period.inputs == [row[1] for row in expected]
    assert period.scores == [row[2] for row in expected]
    assert period.predictions == [row[3] for row in expected]
    assert period.outcomes == [row[4] for row in expected]
    assert period.outcomes[:5] == ["bad"] * 5 and period.outcomes[5:20] == ["good"] * 15
    assert period.outcomes[20:] == [None] * 20
