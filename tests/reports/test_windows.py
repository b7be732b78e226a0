"""The compliance report tells the period window by window: a drifted last day is named
with its PSI (pooled, it would be diluted), the alert it raised is listed, and a long
period is told week by week."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pandas as pd
import pytest
from django.utils import timezone

from auditapp import formatting
from auditapp.accounts import roles
from auditapp.decisions.models import Decision
from auditapp.demo.credit import FEATURES
from auditapp.hashing import canonical_time
from auditapp.monitoring import alerts, metrics, snapshots, tasks
from auditapp.monitoring.models import Alert, MetricSnapshot, MonitoringSettings
from auditapp.monitoring.windows import window_floor
from auditapp.reports import periods, render
from auditapp.reports.compliance import build_compliance_document
from auditapp.reviews.models import ReviewCase
from auditapp.reviews.services import flag_decision, resolve_case
from tests.factories import DecisionPayloadFactory
from tests.reports.conftest import RequestedTogether, pdf_text, read_file, report_body

pytestmark = pytest.mark.django_db

# Decisions on each day of the period: a first day too small to judge drift on
# (ATTEST_MONITORING_MIN_DRIFT_DECISIONS is 100), then full days, the last one shifted.
PER_DAY = (40, 120, 120, 120, 120)
INCOME_FACTOR = 0.6  # the last day's applicants earn 40 % less: a downturn


@dataclass
class DriftedPeriod:
    start: datetime
    end: datetime
    last_day: datetime
    alert: Alert
    snapshot: MetricSnapshot

    def body(self, fmt: str) -> dict:
        return report_body(self.start, self.end, fmt)


def replayed(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """The reference's own applicants, over and over: no drift against it at all."""
    return pd.concat([frame] * (n // len(frame) + 1), ignore_index=True).head(n)


def decisions(rows: pd.DataFrame, pipeline, day: datetime, tag: str) -> list[dict]:
    """One payload per applicant, spread over the day, scored by the model itself."""
    scores = pipeline.predict_proba(rows[FEATURES])[:, list(pipeline.classes_).index("bad")]
    spacing = timedelta(days=1) / (len(rows) + 1)
    return [
        DecisionPayloadFactory(
            request_id=f"{tag}-{i}",
            inputs={k: v.item() if hasattr(v, "item") else v for k, v in row.items()},
            score=float(score),  # exactly the model's: monitoring bins the reference's own
            prediction="bad" if score >= 0.5 else "good",
            predicted_at=(day + spacing * (i + 1)).isoformat(),
        )
        for i, (row, score) in enumerate(
            zip(rows[FEATURES].to_dict(orient="records"), scores, strict=True)
        )
    ]


@pytest.fixture
def drifted(model_version, ingest, credit_frame, credit_pipeline, ml_engineer, compliance_officer):
    """Five days of the background sample's applicants, recorded through the ingestion
    service; on the last day their incomes are 40 % lower. Monitoring computes that day
    (as beat does once it is over), which raises the income drift alert; the compliance
    officer acknowledges it."""
    reference = credit_frame[FEATURES].head(60)  # the version's background sample
    start = window_floor("day", timezone.now()) - timedelta(days=len(PER_DAY) + 1)
    payloads = []
    for index, n in enumerate(PER_DAY):
        rows = replayed(reference, n)
        if index == len(PER_DAY) - 1:
            rows = rows.assign(income=(rows["income"] * INCOME_FACTOR).round(2))
        payloads += decisions(rows, credit_pipeline, start + timedelta(days=index), f"d{index}")
    ingest(*payloads)
    last_day = start + timedelta(days=len(PER_DAY) - 1)
    window = {"from": last_day.isoformat(), "to": (last_day + timedelta(days=1)).isoformat()}
    snapshot = snapshots.request_snapshot(roles.Actor(user=ml_engineer), model_version, window)
    assert tasks.compute_window.run(snapshot.pk)["status"] == MetricSnapshot.DONE
    alert = Alert.objects.get(metric="input_drift_psi", subject="income")
    alerts.acknowledge_alert(roles.Actor(user=compliance_officer), alert)
    return DriftedPeriod(
        start=start,
        end=start + timedelta(days=len(PER_DAY)),
        last_day=last_day,
        alert=Alert.objects.get(pk=alert.pk),
        snapshot=MetricSnapshot.objects.get(pk=snapshot.pk),
    )


@pytest.fixture
def reports(drifted, compliance_officer) -> RequestedTogether:
    """JSON, CSV and PDF of the same request, each generated as a test reads it."""
    return RequestedTogether(roles.Actor(user=compliance_officer), drifted.body)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_the_drift_section_names_the_drifted_feature_and_day_with_its_psi(drifted, reports):
    s = orjson.loads(read_file(reports["json"]))["data"]["sections"]
    drift = s["drift"]
    psi = drifted.snapshot.data["drift"]["income"]["psi"]
    last = canonical_time(drifted.last_day)

    # Each day as monitoring computed it: the report's PSI for the last day is the snapshot's
    # (and the alert's value at raise).
    assert drift["window"] == "day"
    assert [w["decisions"] for w in drift["windows"]] == list(PER_DAY)
    # The version's first decision came after its first day began: partial, as monitoring says.
    assert [w["partial"] for w in drift["windows"]] == [True] + [False] * (len(PER_DAY) - 1)
    assert drift["windows"][-1]["window_start"] == last
    assert drift["windows"][-1]["inputs"]["income"]["psi"] == pytest.approx(psi)
    assert drifted.alert.value == pytest.approx(psi)
    assert psi > 0.2
    found = [(f["feature"], f["window_start"]) for f in drift["drifted"]]
    assert ("income", last) in found
    assert all(window == last for _, window in found), found  # the other days replay the reference
    day, shown = formatting.day(drifted.last_day), formatting.decimal(psi)
    assert f"Annual income (EUR) drifted on {day} (PSI {shown})" in drift["verdict"]

    # The last day is monitoring's own snapshot, read back; the others are computed now.
    assert drift["windows"][-1]["monitoring_snapshot"] == drifted.snapshot.pk
    assert [w["monitoring_snapshot"] for w in drift["windows"][:-1]] == [None] * 4

    # The first day is too small to judge: no figure, the reason instead.
    first = drift["windows"][0]
    assert (first["judged"], first["inputs"]) == (False, None)
    assert first["reason"] == "too few decisions (40; drift is judged on 100 or more)"

    # The pooled figures are still there, under their old keys.
    assert drift["available"] is True
    assert drift["decisions"] == sum(PER_DAY)
    assert 0 < drift["inputs"]["income"]["psi"] < psi
    assert {"inputs", "score", "attributions"} <= drift.keys()
    assert s["fairness"]["by_feature"]["sex"]["disparate_impact_ratio"] is not None
    assert [w["decisions"] for w in s["fairness"]["windows"]] == list(PER_DAY)
    assert [w["decisions"] for w in s["volumes"]["windows"]] == list(PER_DAY)


def test_each_day_computed_from_the_period_fetched_once_is_that_day_as_monitoring_computes_it(
    drifted, model_version
):
    """The report cuts the period's rows by day and computes the days together; each day's
    figures are those monitoring gives the day alone (compute_window_metrics)."""
    sections = build_compliance_document(model_version, drifted.start, drifted.end)["sections"]

    computed = [w for w in sections["drift"]["windows"] if w["judged"]]
    assert [w["monitoring_snapshot"] for w in computed] == [None] * 3 + [drifted.snapshot.pk]
    fairness = {w["window_start"]: w for w in sections["fairness"]["windows"]}
    performance = {w["window_start"]: w for w in sections["volumes"]["windows"]}
    for window in computed[:-1]:
        low = datetime.fromisoformat(window["window_start"])
        alone = metrics.compute_window_metrics(model_version, low, low + timedelta(days=1))
        assert window["decisions"] == alone["decisions"] == PER_DAY[1]
        assert window["inputs"] == {
            name: {"psi": s["psi"], "p_value": s.get("ks_p", s.get("chi2_p")), "drifted": False}
            for name, s in alone["drift"].items()
        }
        assert window["score"]["psi"] == alone["score_drift"]["psi"]
        by_feature = fairness[window["window_start"]]["by_feature"]
        assert set(by_feature) == set(alone["fairness"]) != set()
        for name, entry in by_feature.items():
            assert entry == {key: alone["fairness"][name][key] for key in entry}
        assert performance[window["window_start"]]["with_outcome"] == 0  # no outcome recorded
    # The pooled figures come from the same rows: all five days.
    pooled = metrics.compute_window_metrics(model_version, drifted.start, drifted.end)
    assert sections["drift"]["inputs"] == pooled["drift"]
    assert sections["fairness"]["by_feature"] == pooled["fairness"]


def test_the_report_lists_the_alert_raised_with_its_value_and_who_acknowledged_it(drifted, reports):
    listed = orjson.loads(read_file(reports["json"]))["data"]["sections"]["alerts"]
    (row,) = [a for a in listed["alerts"] if a["alert_id"] == drifted.alert.pk]

    assert row["metric"] == "input_drift_psi" and row["subject"] == "income"
    assert row["subject_label"] == "Annual income (EUR)"
    assert row["value"] == pytest.approx(drifted.alert.value)
    assert row["state"] == "acknowledged"
    assert row["acknowledged_by"] == "compliance_officer"
    # Raised after the period ended (the day is computed once over), about its last day.
    assert row["window_start"] == canonical_time(drifted.last_day)
    assert listed["total"] == len(listed["alerts"]) >= 1


def test_the_pdf_tells_the_drifted_day_the_alert_and_the_pooled_figures(drifted, reports):
    text = pdf_text(reports["pdf"])
    s = orjson.loads(read_file(reports["json"]))["data"]["sections"]
    psi = s["drift"]["windows"][-1]["inputs"]["income"]["psi"]
    day = formatting.day(drifted.last_day)

    assert f"Annual income (EUR) drifted on {day} (PSI {formatting.decimal(psi)})" in flat(text)
    # The alert: what, the value at raise, who acknowledged it (a table row: its cells'
    # lines interleave in the text, so each is looked for on its own).
    listed = flat(text[text.rindex("Monitoring alerts") : text.rindex("Human oversight")])
    for words in ("Input drift (PSI) of", "Annual income (EUR)", "acknowledged by"):
        assert words in listed
    assert "compliance_officer" in listed
    assert formatting.decimal(drifted.alert.value) in listed
    # The per-day table: the first day too small, the last day's income PSI marked drifted.
    assert "too few decisions (40; drift is judged on 100 or more)" in flat(text)
    assert f"{formatting.decimal(psi)}*" in text
    # Pooled, under its own heading.
    pooled = s["drift"]["inputs"]["income"]["psi"]
    assert "Inputs, pooled over the whole period" in text
    assert re.search(rf"Annual income \(EUR\)\s+{re.escape(formatting.decimal(pooled))}\s", text)
    # People's formats: no ISO times, no exponent, no raw figure keys.
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", text)
    assert not re.search(r"\d\.\d+e[-+]\d", text)
    assert "with_outcome" not in text and "roc_auc" not in text


def test_csv_carries_the_same_figures_per_window(drifted, reports):
    rows = list(csv.reader(io.StringIO(read_file(reports["csv"]).decode())))
    by_figure = {(row[0], row[1]): row[2] for row in rows}
    s = orjson.loads(read_file(reports["json"]))["data"]["sections"]

    for window in s["drift"]["windows"]:
        key = f"windows.{window['window_start']}"
        assert by_figure[("drift", f"{key}.decisions")] == str(window["decisions"])
        if window["judged"]:
            income = window["inputs"]["income"]["psi"]
            assert by_figure[("drift", f"{key}.inputs.income.psi")] == render.csv_value(income)
    for window in s["fairness"]["windows"]:
        key = f"windows.{window['window_start']}.judged"
        assert by_figure[("fairness", key)] == render.csv_value(window["judged"])
    assert (
        by_figure[("alerts", f"alerts.{drifted.alert.pk}.acknowledged_by")] == "compliance_officer"
    )


# --- a long period: week windows ------------------------------------------------------------


def test_a_40_day_period_is_told_in_week_windows_partial_at_both_ends(
    model_version, ingest, ml_engineer
):
    today = window_floor("day", timezone.now())
    start = today - timedelta(days=60)
    start -= timedelta(days=(start.weekday() - 3) % 7)  # a Thursday
    end = start + timedelta(days=40)  # a Tuesday
    ingest(
        *[
            DecisionPayloadFactory(predicted_at=(start + timedelta(days=d, hours=9)).isoformat())
            for d in range(0, 40, 3)
        ]
    )

    document = build_compliance_document(model_version, start, end)

    drift = document["sections"]["drift"]
    assert drift["window"] == "week"
    bounds = [(w["window_start"], w["window_end"], w["partial"]) for w in drift["windows"]]
    monday = start + timedelta(days=4)
    expected = [(start, monday, True)]
    expected += [
        (monday + timedelta(weeks=k), monday + timedelta(weeks=k + 1), False) for k in range(5)
    ]
    expected += [(monday + timedelta(weeks=5), end, True)]
    assert bounds == [(canonical_time(a), canonical_time(b), p) for a, b, p in expected]
    assert drift["windows"][0]["label"] == formatting.span(start, monday)
    assert (
        sum(w["decisions"] for w in drift["windows"])
        == document["sections"]["volumes"]["decisions"]
    )
    assert all(not w["judged"] for w in drift["windows"])  # a few decisions a week
    for section in ("volumes", "fairness", "oversight"):
        windows = document["sections"][section]["windows"]
        assert [w["window_start"] for w in windows] == [b[0] for b in bounds], section


def test_a_window_not_over_yet_is_partial(model_version, ingest):
    today = window_floor("day", timezone.now())
    start = today - timedelta(days=2)
    end = start + timedelta(days=3)  # ends at midnight tonight
    # The version's first decision, made today: the factory's hour ago is yesterday until
    # 01:00 UTC, and the window a version's first decision came in is partial too.
    ingest(DecisionPayloadFactory(predicted_at=today.isoformat()))

    windows = build_compliance_document(model_version, start, end)["sections"]["drift"]["windows"]

    assert [w["partial"] for w in windows] == [False, False, True]


# --- people's formats ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "text"),
    [
        ((2026, 11, 21), (2026, 11, 22), "21 Nov 2026"),
        ((2026, 11, 21), (2026, 11, 28), "21\u201327 Nov 2026"),
        ((2026, 11, 28), (2026, 12, 5), "28 Nov \u2013 4 Dec 2026"),
        ((2026, 12, 28), (2027, 1, 4), "28 Dec 2026 \u2013 3 Jan 2027"),
        ((2026, 11, 21, 10), (2026, 11, 22, 9), "21 Nov 2026, 10:00 \u2013 22 Nov 2026, 09:00 UTC"),
    ],
)
def test_periods_read_as_days_both_included(start, end, text):
    assert formatting.span(datetime(*start, tzinfo=UTC), datetime(*end, tzinfo=UTC)) == text


@pytest.mark.parametrize(
    ("value", "percent", "rate"),
    [
        (5e-4, "0.05 %", "< 0.001"),
        (0.262, "26.2 %", "0.262"),
        (0.0, "0 %", "0"),
        (0.4531, "45.3 %", "0.453"),
        (1e-9, "< 0.01 %", "< 0.001"),
    ],
)
def test_shares_read_as_percentages_and_rates_to_three_decimals(value, percent, rate):
    assert formatting.percent(value) == percent
    assert formatting.decimal(value) == rate
    assert "e-" not in render.figure(value)


# --- the review queue ---------------------------------------------------------------------


def test_the_review_queue_throughput_in_the_period_and_per_day(
    model_version, ingest, domain_expert
):
    """Cases of the version's decisions opened, resolved and left open in the period, and
    the median time to resolve those resolved in it."""
    start = window_floor("day", timezone.now()) - timedelta(days=4)
    end = start + timedelta(days=3)
    results = ingest(*[DecisionPayloadFactory() for _ in range(3)])
    expert = roles.Actor(user=domain_expert)
    early, opened, resolved = (
        flag_decision(expert, Decision.objects.get(pk=r["id"]), "Looks odd") for r in results
    )
    resolve_case(expert, resolved, ReviewCase.CONFIRMED)
    moments = {  # opened, resolved
        early.pk: (start - timedelta(days=2), None),  # before the period, still open
        opened.pk: (start + timedelta(hours=3), None),  # day 1, still open
        resolved.pk: (start + timedelta(days=1, hours=2), start + timedelta(days=2, hours=8)),
    }
    for pk, (opened_at, resolved_at) in moments.items():
        ReviewCase.objects.filter(pk=pk).update(opened_at=opened_at, resolved_at=resolved_at)

    oversight = build_compliance_document(model_version, start, end)["sections"]["oversight"]

    queue = oversight["queue"]
    assert (queue["opened"], queue["resolved"], queue["open_at_end"]) == (2, 1, 2)
    assert queue["median_hours_to_resolve"] == pytest.approx(30.0)
    days = [(w["opened"], w["resolved"], w["open_at_end"]) for w in oversight["windows"]]
    assert days == [(1, 0, 2), (1, 0, 3), (0, 1, 2)]


def test_a_case_opened_or_resolved_at_the_first_instant_of_a_day_counts_in_that_day(
    model_version, ingest, domain_expert
):
    """Windows are [start, end): a moment on a boundary belongs to the later day."""
    start = window_floor("day", timezone.now()) - timedelta(days=4)
    (result,) = ingest(DecisionPayloadFactory())
    expert = roles.Actor(user=domain_expert)
    case = flag_decision(expert, Decision.objects.get(pk=result["id"]), "Looks odd")
    resolve_case(expert, case, ReviewCase.CONFIRMED)
    ReviewCase.objects.filter(pk=case.pk).update(
        opened_at=start + timedelta(days=1), resolved_at=start + timedelta(days=2)
    )

    document = build_compliance_document(model_version, start, start + timedelta(days=3))

    windows = document["sections"]["oversight"]["windows"]
    days = [(w["opened"], w["resolved"], w["open_at_end"]) for w in windows]
    assert days == [(0, 0, 0), (1, 0, 1), (0, 1, 0)]


def test_a_stored_snapshot_that_no_longer_holds_is_computed_again(drifted, model_version, ingest):
    """Its reference changed, or a decision of its day arrived after it was computed."""
    document = build_compliance_document(model_version, drifted.start, drifted.end)
    assert (
        document["sections"]["drift"]["windows"][-1]["monitoring_snapshot"] == drifted.snapshot.pk
    )

    ingest(DecisionPayloadFactory(predicted_at=(drifted.last_day + timedelta(hours=1)).isoformat()))
    late = build_compliance_document(model_version, drifted.start, drifted.end)
    last = late["sections"]["drift"]["windows"][-1]
    assert last["monitoring_snapshot"] is None
    assert last["decisions"] == PER_DAY[-1] + 1

    MonitoringSettings.objects.filter(model_version=model_version).update(updated_at=timezone.now())
    MetricSnapshot.objects.filter(pk=drifted.snapshot.pk).update(decisions=PER_DAY[-1] + 1)
    changed = build_compliance_document(model_version, drifted.start, drifted.end)
    assert changed["sections"]["drift"]["windows"][-1]["monitoring_snapshot"] is None


def _drifted_day(day: int, psi: float) -> dict:
    start = datetime(2026, 11, day, tzinfo=UTC)
    return {
        "feature": "income",
        "label": "Income",
        "window_start": start,
        "window_end": start + timedelta(days=1),
        "window": f"{day} Nov 2026",
        "psi": psi,
        "p_value": 0.001,
    }


def test_a_verdict_naming_only_some_drifted_days_names_the_worst_in_date_order():
    """Noise drifts a few early days a little; the shift late in the period drifts most.
    The verdict names the days that drifted most (a reader acts on those), not the first."""
    psis = {3: 0.25, 5: 0.31, 8: 0.22, 20: 0.71, 21: 0.66, 22: 0.59}
    findings = [_drifted_day(day, psi) for day, psi in psis.items()]
    rows = [{"judged": True, "window_start": f["window_start"]} for f in findings]
    text = periods.drift_verdict("day", rows, findings, [])
    assert (
        "Income drifted on 20 Nov 2026 (PSI 0.710), 21 Nov 2026 (PSI 0.660) and "
        "22 Nov 2026 (PSI 0.590), and on 3 other days (PSI 0.220 to 0.310)"
    ) in text


def test_a_fairness_verdict_naming_only_some_failing_days_names_the_lowest_ratios():
    ratios = {3: 0.79, 5: 0.78, 8: 0.77, 20: 0.41, 21: 0.45, 22: 0.52}
    rows = [
        {
            "judged": True,
            "label": f"{day} Nov 2026",
            "by_feature": {"sex": {"disparate_impact_ratio": ratio}},
        }
        for day, ratio in ratios.items()
    ]
    text = periods.fairness_verdict("day", rows, {}, ["sex"], {"sex": "Sex"})
    assert (
        "fails the four-fifths rule on 20 Nov 2026 (0.410), 21 Nov 2026 (0.450) and "
        "22 Nov 2026 (0.520), and on 3 other days (0.770 to 0.790)"
    ) in text


def test_the_pdf_tells_a_run_of_weeks_without_decisions_in_one_row(
    model_version, ingest, compliance_officer
):
    """Twelve weeks with decisions in the last alone: the PDF's tables give the weeks before
    it one row each, not eleven rows of zeros; the JSON keeps every week."""
    ingest(*DecisionPayloadFactory.build_batch(6))  # an hour ago
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    end = today + timedelta(days=7 - today.weekday())  # next Monday: whole weeks
    start = end - timedelta(weeks=12)
    reports = RequestedTogether(
        roles.Actor(user=compliance_officer), lambda fmt: report_body(start, end, fmt)
    )
    sections = orjson.loads(read_file(reports["json"]))["data"]["sections"]
    windows = sections["drift"]["windows"]
    assert windows[0]["window_start"] == canonical_time(start) and windows[-1]["decisions"] == 6
    quiet = [w for w in windows if w["decisions"] == 0 and not w["partial"]]
    assert quiet == windows[:11]  # the weeks before, in a row
    assert [w["window_start"] for w in sections["volumes"]["windows"]] == [
        w["window_start"] for w in windows
    ]

    text = flat(pdf_text(reports["pdf"]))
    run = formatting.span(quiet[0]["window_start"], quiet[-1]["window_end"])
    # Performance, drift and fairness: one row each for the run; the queue: one too.
    assert text.count(f"{run} no decisions in these {len(quiet)} weeks") == 3
    assert f"{run} no case opened, resolved or open in these {len(quiet)} weeks" in text
    for week in quiet[1:-1]:
        assert week["label"] not in text
    assert windows[-1]["label"] in text
