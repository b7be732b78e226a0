"""What the monitoring pages say about the windows they list: a partial window is marked
with its coverage, a computation has a page of its figures, equalised odds says why it is
missing and where it was last measured, and the settings form changes what the API does,
through the same validation, audited, for those allowed only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from django.test import Client

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.outcomes import record_outcomes
from auditapp.monitoring import snapshots, tasks
from auditapp.monitoring.documents import Fairness
from auditapp.monitoring.models import Alert, AlertRule, MetricSnapshot, MonitoringSettings
from auditapp.monitoring.windows import window_floor
from tests.conftest import EVERYONE
from tests.factories import DecisionPayloadFactory

PAGE = "/models/credit/versions/1/monitoring/"
API = "/api/v1/models/credit/versions/1/monitoring"


def a_day(days_ago: int) -> datetime:
    return window_floor("day", datetime.now(UTC)) - timedelta(days=days_ago)


def decisions_from(ingest, start: datetime, count: int, step=timedelta(minutes=1)) -> list[dict]:
    """`count` credit decisions, one every `step` from `start`."""
    items = [
        DecisionPayloadFactory(predicted_at=(start + step * i).isoformat()) for i in range(count)
    ]
    return ingest(*items)


def compute(version, user, start: datetime, end: datetime) -> MetricSnapshot:
    """Ask for the period as the API does, then run the task as the worker would."""
    period = {"from": start.isoformat(), "to": end.isoformat()}
    snapshot = snapshots.request_snapshot(roles.Actor(user=user), version, period)
    assert tasks.compute_window.run(snapshot.pk)["status"] == MetricSnapshot.DONE
    return MetricSnapshot.objects.get(pk=snapshot.pk)


def signed_in(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def text_of(html: str) -> str:
    """The page's text, tags dropped and white space collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- partial windows ------------------------------------------------------------------------


@pytest.fixture
def first_days(model_version, ingest, ml_engineer):
    """credit v1 put live at 14:02 three days ago (39 decisions that day), then a whole day."""
    go_live = a_day(3) + timedelta(hours=14, minutes=2)
    decisions_from(ingest, go_live, 39)
    decisions_from(ingest, a_day(2) + timedelta(minutes=30), 60, step=timedelta(minutes=20))
    first = compute(model_version, ml_engineer, a_day(3), a_day(2))
    second = compute(model_version, ml_engineer, a_day(2), a_day(1))
    return first, second


def test_the_first_day_is_marked_partial_with_its_coverage_wherever_it_is_listed(
    first_days, compliance_officer
):
    first, second = first_days
    client = signed_in(compliance_officer)
    pill = "partial: 39 decisions from 14:02"

    version_page = client.get(PAGE).content.decode()
    recent = version_page.split("Recent computations")[1].split("</table>")[0]
    rows = {
        re.search(r"computations/(\d+)/", row).group(1): text_of(row)
        for row in recent.split("<tr>")[2:]
    }
    assert pill in rows[str(first.pk)]
    assert "partial" not in rows[str(second.pk)]  # a whole day, though not the version's first
    # The charts mark it too (the first day's label), and say what the mark means.
    assert f"{first.window_start:%Y-%m-%d}*" in version_page
    assert "marks a partial window" in version_page
    # No outcomes anywhere: equalised odds says so, rather than a bare dash.
    assert "No day window computed so far has outcomes of both classes yet." in text_of(
        version_page
    )

    computation = client.get(f"{PAGE}computations/{first.pk}/").content.decode()
    assert pill in text_of(computation)

    # The dashboard shows each version's latest window: the whole day, not partial.
    assert "partial:" not in text_of(client.get("/monitoring/").content.decode())
    MetricSnapshot.objects.filter(pk=second.pk).delete()
    dashboard = text_of(client.get("/monitoring/").content.decode())
    assert pill in dashboard
    assert text_of(client.get(PAGE).content.decode()).count(pill) >= 2  # latest and recent


def test_the_api_gives_each_snapshot_its_coverage(first_days, api_client, compliance_officer):
    first, second = first_days

    results = api_client(compliance_officer).get(f"{API}?window=day").json()["results"]

    by_id = {r["id"]: r for r in results}
    go_live = first.window_start + timedelta(hours=14, minutes=2)
    assert by_id[first.pk]["coverage"] == {
        "partial": True,
        "from": go_live.isoformat(),
        "to": first.window_end.isoformat(),
    }
    assert by_id[second.pk]["coverage"] == {
        "partial": False,
        "from": second.window_start.isoformat(),
        "to": second.window_end.isoformat(),
    }
    assert by_id[first.pk]["decisions"] == 39  # the existing fields are all still there
    assert {"drift", "score_drift", "fairness", "performance"} <= set(by_id[first.pk])


def test_a_window_computed_before_it_ended_is_partial_up_to_then(
    model_version, ingest, ml_engineer, compliance_officer
):
    decisions_from(ingest, a_day(1), 30, step=timedelta(minutes=30))
    today = a_day(0)
    snapshot = compute(model_version, ml_engineer, a_day(1), today + timedelta(days=1))
    computed = snapshot.computed_at

    html = signed_in(compliance_officer).get(f"{PAGE}computations/{snapshot.pk}/")

    assert snapshot.window == "custom"
    assert f"partial: 30 decisions up to {computed:%Y-%m-%d %H:%M}" in text_of(
        html.content.decode()
    )


# --- a computation's page -------------------------------------------------------------------


def test_a_custom_computation_has_a_page_with_its_figures_polled_until_done(
    first_days, ml_engineer, model_version
):
    client = signed_in(ml_engineer)
    start, end = a_day(3) + timedelta(hours=12), a_day(2) + timedelta(hours=6)

    response = client.post(
        f"{PAGE}compute", {"from": f"{start:%Y-%m-%dT%H:%M}", "to": f"{end:%Y-%m-%dT%H:%M}"}
    )

    snapshot = MetricSnapshot.objects.get(window="custom", window_start=start, window_end=end)
    url = f"{PAGE}computations/{snapshot.pk}/"
    assert response.status_code == 302 and response["Location"] == url
    pending = client.get(url).content.decode()
    assert 'data-status="pending"' in pending
    assert f'hx-get="{url}" hx-trigger="every 1s"' in pending
    assert f'href="{url}"' in client.get(PAGE).content.decode()  # its row links to it

    assert tasks.compute_window.run(snapshot.pk)["status"] == "done"
    snapshot.refresh_from_db()
    fragment = client.get(url, HTTP_HX_REQUEST="true")
    html = fragment.content.decode()
    assert "<html" not in html and "hx-get" not in html  # the fragment, polling no more
    text = text_of(html)
    # 39 decisions of the first day from 14:02, and those of the next day until 06:00.
    assert snapshot.decisions == 39 + 17
    assert re.search(r"Decisions\s+56\b", text)
    document = snapshot.data
    assert f"Score PSI {document['score_drift']['psi']:.3f}" in text
    assert "Accuracy" in text or "No outcomes recorded" in text
    age = document["drift"]["age"]
    assert re.search(rf"Age \(years\) {age['psi']:.3f}", text)
    sex = document["fairness"]["sex"]
    assert f"{sex['disparate_impact_ratio']:.3f}" in text
    assert "awaiting outcomes" in text  # no outcomes: equalised odds is not a bare dash


def test_the_api_names_a_requested_computation_s_page(model_version, ml_engineer, api_client):
    period = {"from": "2026-01-05T06:00:00Z", "to": "2026-01-05T18:00:00Z"}

    body = api_client(ml_engineer).post(API, period, format="json").json()

    assert body["window"] == "custom"
    assert body["page_url"] == f"{PAGE}computations/{body['id']}/"
    assert signed_in(ml_engineer).get(body["page_url"]).status_code == 200


def test_a_computation_of_another_version_is_not_found_here(first_days, ml_engineer, register):
    other = register(ml_engineer, version="2")
    snapshot = compute(other, ml_engineer, a_day(3), a_day(2))
    client = signed_in(ml_engineer)
    assert client.get(f"{PAGE}computations/{snapshot.pk}/").status_code == 404
    assert (
        client.get(f"/models/credit/versions/2/monitoring/computations/{snapshot.pk}/").status_code
        == 200
    )


# --- equalised odds -------------------------------------------------------------------------


def test_equalised_odds_says_outcomes_lag_and_shows_the_latest_window_with_outcomes(
    model_version, ingest, ml_engineer, compliance_officer
):
    old = decisions_from(ingest, a_day(10), 60, step=timedelta(minutes=15))
    items = [
        {
            "decision_id": d["id"],
            "model": "credit",
            "outcome": "bad" if i % 3 == 0 else "good",
            "observed_at": a_day(1).isoformat(),
        }
        for i, d in enumerate(old)
    ]
    record_outcomes(roles.Actor(user=ml_engineer), {"outcomes": items})
    decisions_from(ingest, a_day(9), 40, step=timedelta(minutes=20))  # no outcomes yet
    decisions_from(ingest, a_day(2), 40, step=timedelta(minutes=20))
    with_outcomes = compute(model_version, ml_engineer, a_day(10), a_day(9))
    compute(model_version, ml_engineer, a_day(9), a_day(8))
    compute(model_version, ml_engineer, a_day(2), a_day(1))

    text = text_of(signed_in(compliance_officer).get(PAGE).content.decode())

    assert (
        "Equalised odds compares the groups' error rates, so it needs each decision's true "
        "outcome, and outcomes arrive long after the decisions"
    ) in text
    assert "The latest day has no outcomes yet" in text
    odds = with_outcomes.data["fairness"]
    assert odds["sex"]["equalized_odds_difference"] is not None
    assert (
        f"Latest day with outcomes: {with_outcomes.window_start:%Y-%m-%d} (60 outcomes): "
        f"equalised odds difference age {odds['age']['equalized_odds_difference']:.3f} · "
        f"sex {odds['sex']['equalized_odds_difference']:.3f}."
    ) in text


def test_no_note_when_the_latest_window_has_equalised_odds(
    model_version, ingest, ml_engineer, compliance_officer
):
    made = decisions_from(ingest, a_day(4), 40, step=timedelta(minutes=20))
    items = [
        {
            "decision_id": d["id"],
            "model": "credit",
            "outcome": ["good", "bad"][i % 2],
            "observed_at": a_day(1).isoformat(),
        }
        for i, d in enumerate(made)
    ]
    record_outcomes(roles.Actor(user=ml_engineer), {"outcomes": items})
    compute(model_version, ml_engineer, a_day(4), a_day(3))

    html = signed_in(compliance_officer).get(PAGE).content.decode()

    assert 'id="odds-note"' not in html and "awaiting outcomes" not in html


# --- the settings form ----------------------------------------------------------------------


class FormReader(HTMLParser):
    """What a browser would post for the settings form as the page shows it."""

    def __init__(self):
        super().__init__()
        self.inside, self.select, self.first_option = False, None, None
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and (a.get("action") or "").endswith("/monitoring/settings#settings"):
            self.inside = True
        if not self.inside:
            return
        if tag == "input" and a.get("name") and a.get("type") != "hidden":
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.values[a["name"]] = "on"
            else:
                self.values[a["name"]] = a.get("value") or ""
        elif tag == "select":
            self.select, self.first_option = a["name"], None
        elif tag == "option" and self.select:
            if self.first_option is None:
                self.first_option = a.get("value", "")
                self.values.setdefault(self.select, self.first_option)
            if "selected" in a:
                self.values[self.select] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "select":
            self.select = None
        if tag == "form":
            self.inside = False


def rendered_form(client) -> dict[str, str]:
    reader = FormReader()
    reader.feed(client.get(PAGE).content.decode())
    return reader.values


def own_rules(version) -> dict[str, AlertRule]:
    return {r.metric: r for r in AlertRule.objects.filter(model_version=version)}


def form_data(version, **changes) -> dict:
    """The form as the page fills it for the default settings, with some fields changed."""
    data = {
        "reference": "background",
        "reference_from": "",
        "reference_to": "",
        "favourable_class": "",
        "fairness_groups.age": "",
    }
    for rule in own_rules(version).values():
        data[f"rules.{rule.pk}.threshold"] = f"{rule.threshold:g}"
        if rule.enabled:
            data[f"rules.{rule.pk}.enabled"] = "on"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_a_settings_change_is_stored_audited_and_used_by_the_next_computation(
    model_version, ingest, ml_engineer, compliance_officer
):
    rules = own_rules(model_version)
    di, failures = rules["disparate_impact_ratio"], rules["explanation_failure_rate"]
    client = signed_in(ml_engineer)
    data = rendered_form(client)  # the form as the page shows it, then filled in
    assert data == form_data(model_version)
    data.update({"favourable_class": "bad", "fairness_groups.age": "30, 50"})
    data[f"rules.{di.pk}.threshold"] = "1"
    del data[f"rules.{failures.pk}.enabled"]  # unticked

    response = client.post(f"{PAGE}settings", data)

    assert response.status_code == 302 and response["Location"] == f"{PAGE}#settings"
    config = MonitoringSettings.objects.get(model_version=model_version)
    assert (config.favourable_class, config.fairness_groups) == ("bad", {"age": [30, 50]})
    assert config.updated_by == ml_engineer
    di.refresh_from_db()
    failures.refresh_from_db()
    assert (di.threshold, di.name, failures.enabled) == (
        1.0,
        "Disparate impact ratio < 1",
        False,
    )
    event = AuditEvent.objects.get(action="monitoring.configured")
    assert event.actor == ml_engineer
    assert event.details["changed"] == ["fairness_groups", "favourable_class", "rules"]
    assert event.details["before"]["favourable_class"] is None
    assert event.details["after"]["favourable_class"] == "bad"
    assert event.details["before"]["fairness_groups"] == {}
    assert event.details["after"]["fairness_groups"] == {"age": [30, 50]}
    before = {r["id"]: r for r in event.details["before"]["rules"]}
    after = {r["id"]: r for r in event.details["after"]["rules"]}
    assert (before[di.pk]["threshold"], after[di.pk]["threshold"]) == (0.8, 1.0)
    assert (before[failures.pk]["enabled"], after[failures.pk]["enabled"]) == (True, False)
    page = client.get(PAGE).content.decode()
    assert "Monitoring settings saved" in page
    assert 'name="fairness_groups.age" value="30, 50"' in page

    # The next computation uses them: groups cut at 30 and 50, "bad" selected, and the
    # disparate impact rule judging against its new threshold.
    decisions_from(ingest, a_day(2), 40, step=timedelta(minutes=20))
    snapshot = compute(model_version, ml_engineer, a_day(2), a_day(1))
    age = snapshot.data["fairness"]["age"]
    assert age["group_edges"] == [30, 50]
    assert set(age["selection_rate"]) <= {"< 30", "30\u201350", "\u2265 50", "missing"}
    assert age["selected_class"] == "bad"
    raised = Alert.objects.filter(rule=di, snapshot=snapshot)
    ratios = {n: e["disparate_impact_ratio"] for n, e in snapshot.data["fairness"].items()}
    assert {a.subject for a in raised} == {n for n, r in ratios.items() if r is not None and r < 1}
    assert all(a.threshold == 1.0 for a in raised)
    # Nothing changed, nothing written.
    signed_in(ml_engineer).post(
        f"{PAGE}settings",
        form_data(model_version, favourable_class="bad", **{"fairness_groups.age": "30, 50"}),
    )
    assert AuditEvent.objects.filter(action="monitoring.configured").count() == 1


def test_the_form_as_shown_is_the_stored_settings_and_saving_it_changes_nothing(
    model_version, ml_engineer, api_client
):
    psi = own_rules(model_version)["input_drift_psi"]
    body = {
        "reference": "period",
        "reference_from": "2026-01-01T10:00:30.250000Z",  # finer than the form's minutes
        "reference_to": "2026-01-08T00:00:00Z",
        "favourable_class": "good",
        "fairness_groups": {"age": [25, 40.5, 60]},
        "rules": [{"id": psi.pk, "threshold": 0.1234567}],  # finer than "%g"
    }
    assert api_client(ml_engineer).put(f"{API}/settings", body, format="json").status_code == 200
    client = signed_in(ml_engineer)

    shown = rendered_form(client)
    response = client.post(f"{PAGE}settings", shown)

    assert shown["reference"] == "period"
    assert shown["reference_from"] == "2026-01-01T10:00"
    assert shown["favourable_class"] == "good"
    assert shown["fairness_groups.age"] == "25, 40.5, 60"
    assert shown[f"rules.{psi.pk}.threshold"] == "0.1234567"
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="monitoring.configured").count() == 1  # the API's
    config = MonitoringSettings.objects.get(model_version=model_version)
    assert config.reference_start == datetime(2026, 1, 1, 10, 0, 30, 250000, tzinfo=UTC)
    assert AlertRule.objects.get(pk=psi.pk).threshold == 0.1234567


def test_refused_settings_name_each_field_on_the_page_and_in_the_api_alike(
    model_version, ml_engineer, api_client
):
    rules = own_rules(model_version)
    psi = rules["input_drift_psi"]
    data = form_data(
        model_version,
        reference="period",
        reference_from="2026-01-10T00:00",
        reference_to="2026-01-01T00:00",
        **{"fairness_groups.age": "60, 40", f"rules.{psi.pk}.threshold": "much"},
    )

    response = signed_in(ml_engineer).post(f"{PAGE}settings", data)

    assert response.status_code == 400
    text = text_of(response.content.decode())
    assert "The settings were not saved" in text
    assert "fairness_groups.age must be increasing finite numbers" in text
    assert f"rules.{psi.pk}.threshold (input drift (PSI)) must be a number from 0" in text
    assert "The reference period: to must be after from." in text
    html = response.content.decode()
    assert (
        'name="fairness_groups.age" value="60, 40" inputmode="decimal" aria-invalid="true"' in html
    )
    assert 'id="error-reference_to"' in html
    assert not AuditEvent.objects.filter(action="monitoring.configured").exists()
    config = MonitoringSettings.objects.get(model_version=model_version)
    assert (config.reference_kind, config.fairness_groups) == ("background", {})
    assert AlertRule.objects.get(pk=psi.pk).threshold == 0.2

    body = {
        "reference": "period",
        "reference_from": "2026-01-10T00:00:00Z",
        "reference_to": "2026-01-01T00:00:00Z",
        "fairness_groups": {"age": [60, 40]},
        "rules": [{"id": psi.pk, "threshold": "much"}],
    }
    api = api_client(ml_engineer).put(f"{API}/settings", body, format="json")
    assert api.status_code == 400
    details = api.json()["error"]["details"]
    assert set(details) == {"reference_to", "fairness_groups.age", f"rules.{psi.pk}.threshold"}
    page_errors = response.context["settings_form"]["errors"]
    assert details == page_errors  # one validation, the same reasons


def test_a_rule_of_another_version_or_a_bad_range_is_refused(
    model_version, ml_engineer, register, api_client
):
    other = register(ml_engineer, version="2")
    foreign = AlertRule.objects.filter(model_version=other).first()
    di = own_rules(model_version)["disparate_impact_ratio"]
    body = {
        "rules": [
            {"id": foreign.pk, "threshold": 0.5},
            {"id": di.pk, "threshold": 1.5, "enabled": "yes"},
        ]
    }

    response = api_client(ml_engineer).put(f"{API}/settings", body, format="json")

    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert "is not one of this version's own rules" in details[f"rules.{foreign.pk}"][0]
    assert details[f"rules.{di.pk}.threshold"] == [
        f"rules.{di.pk}.threshold (disparate impact ratio) must be a number from 0 to 1."
    ]
    assert details[f"rules.{di.pk}.enabled"] == [f"rules.{di.pk}.enabled must be true or false."]
    assert AlertRule.objects.get(pk=foreign.pk).threshold != 0.5


def test_the_api_reads_and_changes_the_rules_too(model_version, ml_engineer, api_client):
    psi = own_rules(model_version)["input_drift_psi"]
    client = api_client(ml_engineer)

    response = client.put(
        f"{API}/settings", {"rules": [{"id": psi.pk, "threshold": 0.25}]}, format="json"
    )

    assert response.status_code == 200
    rules = {r["id"]: r for r in response.json()["rules"]}
    assert rules[psi.pk] == {
        "id": psi.pk,
        "name": "Input drift (PSI) > 0.25",
        "metric": "input_drift_psi",
        "comparison": "gt",
        "threshold": 0.25,
        "window": "day",
        "enabled": True,
        "scope": "version",
    }
    assert client.get(f"{API}/settings").json()["rules"] == response.json()["rules"]


ALLOWED = {"ml_engineer", "admin"}  # roles.CONFIGURE_MONITORING, as the role map says


def test_the_role_map_is_what_the_tests_expect():
    assert {
        role for role, caps in roles.ROLE_CAPABILITIES.items() if roles.CONFIGURE_MONITORING in caps
    } == ALLOWED


@pytest.mark.parametrize("who", EVERYONE)
def test_only_those_allowed_see_the_form_and_change_settings(model_version, users, who):
    user = users[who]
    client = signed_in(user)
    di = own_rules(model_version)["disparate_impact_ratio"]
    data = form_data(model_version, favourable_class="bad", **{f"rules.{di.pk}.threshold": "0.5"})

    page = client.get(PAGE)
    response = client.post(f"{PAGE}settings", data)

    config = MonitoringSettings.objects.get(model_version=model_version)
    changed = AuditEvent.objects.filter(action="monitoring.configured")
    if who == "anonymous":
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    elif who in ("outsider", "no_role"):
        assert response.status_code in (403, 404)  # not a model they may see
    elif who in ALLOWED:
        assert b'action="/models/credit/versions/1/monitoring/settings#settings"' in page.content
        assert response.status_code == 302
        assert config.favourable_class == "bad"
        assert changed.count() == 1
        return
    else:
        assert page.status_code == 200
        assert b"Save settings" not in page.content
        assert (
            b'action="/models/credit/versions/1/monitoring/settings#settings"' not in page.content
        )
        assert b'name="fairness_groups.age"' not in page.content
        assert b"Disparate impact below 0.8" in page.content  # read, not edited
        assert response.status_code == 403
        assert b"Disparate impact" not in response.content and b"credit" not in response.content
    assert config.favourable_class is None
    assert AlertRule.objects.get(pk=di.pk).threshold == 0.8
    assert not changed.exists()


def test_fairness_groups_read_in_their_own_order_whatever_order_jsonb_keeps():
    """jsonb returns keys by length ('< 33', '≥ 49', '33-41', '41-49'); read back in order."""
    stored = {"< 33": 1.0, "≥ 49": 0.9, "33\u201341": 0.2, "41\u201349": 0.3, "missing": 0.5}
    fairness = Fairness.from_document(
        {"selection_rate": stored, "counts": dict.fromkeys(stored, 4)}
    )
    expected = ["< 33", "33\u201341", "41\u201349", "≥ 49", "missing"]
    assert list(fairness.selection_rate) == list(fairness.counts) == expected
    sexes = Fairness.from_document({"selection_rate": {"male": 0.5, "female": 0.4}})
    assert list(sexes.selection_rate) == ["female", "male"]


def test_more_windows_than_the_api_lists_is_refused_not_cut(
    first_days, api_client, compliance_officer, monkeypatch
):
    """At the cap the list had held the oldest windows and dropped the newest unsaid."""
    monkeypatch.setattr("auditapp.monitoring.api.MAX_SNAPSHOTS", 1)
    _, second = first_days
    client = api_client(compliance_officer)

    response = client.get(API, {"window": "day"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "too_many_rows" and "from" in error["message"]
    narrowed = client.get(API, {"window": "day", "from": second.window_start.isoformat()})
    assert [r["id"] for r in narrowed.json()["results"]] == [second.pk]
