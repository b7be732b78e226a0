"""The reviewer's pages, per role: search, CSV download, decision page, model pages."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from auditapp import pages
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from auditapp.formatting import number
from auditapp.registry.models import ModelVersion
from explain import batches
from tests.factories import DecisionPayloadFactory


@pytest.fixture
def decisions(model_version, ingest):
    results = ingest(*DecisionPayloadFactory.build_batch(12))
    ids = [r["id"] for r in results]
    batches.run_batch(model_version.pk, "shap", ids)
    batches.run_batch(model_version.pk, "lime", ids[:2])
    return ids


def browser(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


class TestSearch:
    def test_it_lists_matching_decisions_with_a_count(self, compliance_officer, decisions):
        response = browser(compliance_officer).get("/decisions/", {"model": "credit"})
        assert response.status_code == 200
        assert response.context["count"] == 12
        assert len(response.context["results"]) == 12
        assert b"12</strong> decisions match" in response.content

    def test_the_count_stops_at_its_limit_and_says_more(
        self, compliance_officer, decisions, monkeypatch
    ):
        """Counting every match of a month at a bank's scale took seconds (1.8 s for 2M
        decisions): the page counts up to COUNT_LIMIT, then says "more than"."""
        monkeypatch.setattr(pages, "COUNT_LIMIT", 10)
        client = browser(compliance_officer)
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/decisions/", {"model": "credit"})
        assert (response.context["count"], response.context["more"]) == (10, True)
        assert b"More than <strong>10</strong> decisions match" in response.content
        (count,) = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"]]
        assert "LIMIT 11" in count, count
        monkeypatch.setattr(pages, "COUNT_LIMIT", 12)
        response = client.get("/decisions/", {"model": "credit"})
        assert (response.context["count"], response.context["more"]) == (12, False)
        assert b'<p class="count"><strong>12</strong> decisions match' in response.content

    def test_each_result_shows_its_top_reasons_with_values_masked_as_on_its_page(
        self, compliance_officer, auditor, decisions, model_version
    ):
        from explain.models import Explanation

        schema = model_version.parsed_schema
        features = {f.name: f for f in schema.features}
        newest = Explanation.objects.with_results().filter(method="shap", decision_id__in=decisions)
        for user in (compliance_officer, auditor):
            response = browser(user).get("/decisions/", {"model": "credit"})
            shown = {d.pk: reasons for d, _, reasons in response.context["results"]}
            for explanation in newest.select_related("decision"):
                decision = explanation.decision
                hidden = schema.sensitive_names if user == auditor else frozenset()
                expected = [
                    f"{features[n].label} = {features[n].format_value(decision.full_inputs()[n])}"
                    for n in explanation.top_features[:3]
                    if n not in hidden
                ]
                assert [r["text"] for r in shown[decision.pk]] == expected
            if user == auditor:  # a masked value never shows, by itself or as a reason
                html = response.content.decode()
                for name in schema.sensitive_names:
                    assert f"{features[name].label} = " not in html

    def test_the_review_state_filter_is_on_the_form(self, compliance_officer, decisions):
        response = browser(compliance_officer).get("/decisions/", {"review": "open"})
        assert b'<option value="open" selected>awaiting review</option>' in response.content

    def test_filters_live_in_the_url_and_narrow_the_results(self, compliance_officer, decisions):
        response = browser(compliance_officer).get(
            "/decisions/", {"model": "credit", "prediction": "bad"}
        )
        shown = [d for d, *_ in response.context["results"]]
        assert shown and {d.prediction for d in shown} == {"bad"}

    def test_htmx_gets_only_the_results_fragment(self, compliance_officer, decisions):
        response = browser(compliance_officer).get(
            "/decisions/", {"model": "credit"}, HTTP_HX_REQUEST="true"
        )
        assert b"<form" not in response.content and b"Download CSV" in response.content

    def test_a_domain_expert_sees_nothing_of_models_not_assigned(self, outsider, decisions):
        response = browser(outsider).get("/decisions/")
        assert response.status_code == 200
        assert response.context["count"] == 0

    def test_anonymous_is_sent_to_login_and_no_role_is_refused(self, no_role, decisions):
        assert browser(None).get("/decisions/").status_code == 302
        assert browser(no_role).get("/decisions/").status_code == 403

    def test_every_search_is_audited(self, compliance_officer, decisions):
        browser(compliance_officer).get("/decisions/", {"model": "credit"})
        event = AuditEvent.objects.get(action="decisions.searched")
        assert event.actor == compliance_officer and event.details["params"] == {"model": "credit"}

    def test_query_count_does_not_grow_with_the_page(
        self, compliance_officer, decisions, django_assert_max_num_queries
    ):
        client = browser(compliance_officer)
        client.get("/decisions/")  # warm the session
        # ... and one for the page's top reasons, whatever its length
        with django_assert_max_num_queries(13):
            client.get("/decisions/", {"model": "credit", "limit": 12})


class TestCsvDownload:
    def test_it_masks_sensitive_features_for_auditors_and_is_audited(self, auditor, decisions):
        response = browser(auditor).get("/decisions/export.csv", {"model": "credit"})
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        assert len(rows) == 12
        assert {r["income"] for r in rows} == {"[masked]"}
        assert {r["sex"] for r in rows} == {"[masked]"}
        assert all(r["age"].isdigit() for r in rows)
        assert AuditEvent.objects.filter(action="decisions.exported", actor=auditor).count() == 1

    def test_a_misspelt_filter_exports_nothing_and_says_which(self, compliance_officer, decisions):
        for path in ("/decisions/", "/decisions/export.csv"):
            response = browser(compliance_officer).get(path, {"model": "credit", "scor_min": "0.5"})
            assert response.status_code == 400
            assert "scor_min" in response.content.decode()
        assert not AuditEvent.objects.filter(action="decisions.exported").exists()

    def test_a_search_with_more_rows_than_an_export_holds_is_refused_not_cut(
        self, compliance_officer, decisions, monkeypatch
    ):
        """At the cap, the file had held the newest rows and said nothing of the rest."""
        monkeypatch.setattr("auditapp.dossier.views.EXPORT_LIMIT", 5)

        response = browser(compliance_officer).get("/decisions/export.csv", {"model": "credit"})

        assert response.status_code == 400
        assert "more than 5" in response.content.decode()
        assert not AuditEvent.objects.filter(action="decisions.exported").exists()

    @pytest.mark.parametrize("ordering", ["score", "-score", "predicted_at"])
    def test_it_keeps_the_order_the_page_shows(self, compliance_officer, decisions, ordering):
        """Sorted by score on the page, the file had come newest first all the same."""
        response = browser(compliance_officer).get(
            "/decisions/export.csv", {"model": "credit", "ordering": ordering}
        )
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        shown = browser(compliance_officer).get(
            "/decisions/", {"model": "credit", "ordering": ordering}
        )
        assert [int(r["id"]) for r in rows] == [d.pk for d, _, _ in shown.context["results"]]

    def test_a_compliance_officer_gets_the_values(self, compliance_officer, decisions):
        response = browser(compliance_officer).get("/decisions/export.csv", {"model": "credit"})
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        assert "[masked]" not in {r["income"] for r in rows}


class TestDecisionPage:
    def test_it_shows_inputs_reasons_and_both_explanations(self, compliance_officer, decisions):
        response = browser(compliance_officer).get(f"/decisions/{decisions[0]}/")
        assert response.status_code == 200
        html = response.content.decode()
        assert "Annual income (EUR)" in html
        assert response.context["waterfall"] is not None
        assert response.context["lime_chart"] is not None
        reasons = response.context["reasons"]
        shap = response.context["shap"]
        floor = 0.01 * sum(abs(v) for v in shap.attributions.values())  # reasons.MIN_SHARE
        expected = sorted(
            (k for k, v in shap.attributions.items() if v > 0 and v >= floor),
            key=lambda k: -shap.attributions[k],
        )[:4]
        assert [r.feature for r in reasons] == expected
        assert html.count('data-kind="contribution"') >= 1

    def test_it_hides_sensitive_values_from_auditors(self, auditor, decisions):
        response = browser(auditor).get(f"/decisions/{decisions[0]}/")
        rows = {row["name"]: row for row in response.context["inputs"]}
        assert rows["income"]["masked"] and rows["income"]["value"] == "[masked]"
        assert not rows["age"]["masked"]

    def test_a_decision_of_another_model_is_not_found(self, outsider, decisions):
        assert browser(outsider).get(f"/decisions/{decisions[0]}/").status_code == 404

    def test_every_view_is_audited(self, domain_expert, decisions):
        browser(domain_expert).get(f"/decisions/{decisions[0]}/")
        event = AuditEvent.objects.get(action="decision.viewed")
        assert event.object_id == str(decisions[0]) and event.details["via"] == "page"

    def test_recompute_is_refused_to_auditors_and_queued_for_others(
        self, auditor, compliance_officer, decisions
    ):
        assert browser(auditor).post(f"/decisions/{decisions[0]}/explain").status_code == 403
        response = browser(compliance_officer).post(
            f"/decisions/{decisions[0]}/explain", HTTP_HX_REQUEST="true"
        )
        assert response.status_code == 200
        assert response.context["busy"] is True
        assert b'hx-trigger="every 2s"' in response.content

    def test_query_count_is_pinned(
        self, compliance_officer, decisions, django_assert_max_num_queries
    ):
        client = browser(compliance_officer)
        client.get(f"/decisions/{decisions[0]}/")
        # session, user, roles, decision, audit event (with its sealing lock on PostgreSQL),
        # seal, review case (with its overrides and history when open), explanations,
        # outcomes, feedback
        with django_assert_max_num_queries(13):
            client.get(f"/decisions/{decisions[1]}/")


class TestModelPages:
    def test_the_version_page_shows_card_history_and_figures(self, compliance_officer, decisions):
        response = browser(compliance_officer).get("/models/credit/versions/1/")
        assert response.status_code == 200
        stats = response.context["stats"]
        assert stats.decisions == 12 and stats.explained == 12
        assert sum(stats.score_counts) == 12
        importance = dict(stats.importance)
        assert set(importance) == set(response.context["schema"].names)
        assert list(importance.values()) == sorted(importance.values(), reverse=True)
        assert b"Pre-screening of loan applications." in response.content

    def test_the_version_page_counts_its_score_histogram_in_the_database(
        self, compliance_officer, decisions
    ):
        """Every score of the version was read into Python for the histogram: 10 million
        decisions would have been a gigabyte on each visit of the page."""
        client = browser(compliance_officer)
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/models/credit/versions/1/")
        # Bins [0, 0.05), [0.05, 0.1) ... [0.95, 1], in exact decimals: np.histogram's edges
        # (np.linspace) are a hair above 0.15, 0.3, 0.35... and put those scores a bin low.
        expected = [0] * 20
        for score in Decision.objects.exclude(score=None).values_list("score", flat=True):
            expected[min(int(Decimal(repr(score)) * 20), 19)] += 1
        stats = response.context["stats"]
        assert stats.score_counts == expected
        days = Counter(
            d.predicted_at.astimezone(UTC).date().isoformat() for d in Decision.objects.all()
        )
        assert stats.per_day == sorted(days.items()) and stats.decisions == 12
        reads = [q["sql"] for q in queries.captured_queries if '"score"' in q["sql"]]
        assert len(reads) == 1 and "COUNT(" in reads[0], reads  # one pass for both figures

    def test_the_self_test_s_figures_read_as_numbers_not_strings_of_zeros(
        self, compliance_officer, model_version
    ):
        shap = model_version.self_test["shap"]
        shap["max_additivity_error"] = 3.108624468950438e-15  # as TreeSHAP leaves it
        ModelVersion.objects.filter(pk=model_version.pk).update(self_test=model_version.self_test)
        page = browser(compliance_officer).get("/models/credit/versions/1/").content.decode()
        error, tolerance = number(3.108624468950438e-15), number(1e-6)
        assert (error, tolerance) == (
            "3.1 \N{MULTIPLICATION SIGN} 10⁻¹⁵",
            "1.0 \N{MULTIPLICATION SIGN} 10⁻⁶",
        )
        assert f"<dt>Largest difference</dt><dd>{error} (tolerance {tolerance} relative)" in page
        assert "0.00000000" not in page

    def test_the_list_shows_versions_with_their_volume(self, compliance_officer, decisions):
        response = browser(compliance_officer).get("/models/")
        (model,) = response.context["models"]
        (version,) = model.versions.all()
        assert version.decision_count == 12

    def test_models_not_assigned_are_not_found(self, outsider, decisions):
        assert browser(outsider).get("/models/credit/versions/1/").status_code == 404
        assert browser(outsider).get("/models/").context["pager"].total == 0

    def test_the_model_s_address_leads_to_its_production_version(
        self, compliance_officer, ml_engineer, register, decisions
    ):
        # /models/credit/ is where a reader lands going up from a version's page
        ModelVersion.objects.filter(version="1").update(stage=ModelVersion.PRODUCTION)
        register(ml_engineer, version="2")  # newer, but in staging
        response = browser(compliance_officer).get("/models/credit/")
        assert response.status_code == 302
        assert response["Location"] == "/models/credit/versions/1/"
        # no version in production: the newest one
        ModelVersion.objects.filter(version="1").update(stage=ModelVersion.ARCHIVED)
        response = browser(compliance_officer).get("/models/credit/")
        assert response["Location"] == "/models/credit/versions/2/"


def test_the_django_admin_is_for_admins_only(admin, compliance_officer, auditor):
    assert browser(admin).get("/admin/accounts/auditevent/").status_code == 200
    for user in (compliance_officer, auditor):
        assert browser(user).get("/admin/").status_code == 302  # to the admin's login


# Every page that filters, orders or pages by its query string, with a misspelt parameter
# each: ignored, `?shwo=resolved` showed the open cases and was read as the resolved ones.
MISSPELT_PAGES = [
    ("/review/", {"shwo": "resolved"}),
    ("/reports/", {"knd": "notice"}),
    ("/models/", {"ordr": "newest"}),
    ("/monitoring/", {"ordr": "oldest"}),
    ("/models/credit/versions/1/monitoring/", {"windw": "week"}),
    ("/models/credit/compare/", {"a": "1", "bb": "1"}),
]


@pytest.mark.parametrize("path, params", MISSPELT_PAGES, ids=[p for p, _ in MISSPELT_PAGES])
def test_a_misspelt_page_parameter_is_refused_by_name_not_ignored(
    admin, model_version, path, params
):
    response = browser(admin).get(path, params)

    assert response.status_code == 400, response.content[:300]
    misspelt = next(key for key in params if key not in ("a",))
    html = response.content.decode()
    assert misspelt in html and "takes" in html


# Known parameters with a value the page does not know: ignored, `?who=mne` listed
# everyone's cases and `?window=wek` the days, each read as what was asked for.
BAD_VALUES = [
    ("/review/", {"who": "mne"}, "who"),
    ("/models/credit/versions/1/monitoring/", {"window": "wek"}, "window"),
]


@pytest.mark.parametrize("path, params, named", BAD_VALUES, ids=[p for p, _, _ in BAD_VALUES])
def test_a_page_parameter_with_an_unknown_value_is_refused_by_name(
    admin, model_version, path, params, named
):
    response = browser(admin).get(path, params)

    assert response.status_code == 400, response.content[:300]
    assert named in response.content.decode()


# A model (or version) a list is filtered by, misspelt: "none found" had read as "none".
UNSEEN_MODEL = [
    ("/review/", {"model": "credt"}, "model"),
    ("/api/v1/alerts", {"model": "credt"}, "model"),
    ("/api/v1/alerts", {"model": "credit", "version": "9"}, "version"),
    ("/decisions/", {"model": "credt"}, "model"),
]


@pytest.mark.parametrize(
    "path, params, named", UNSEEN_MODEL, ids=[f"{p}:{n}" for p, _, n in UNSEEN_MODEL]
)
def test_a_list_filtered_by_a_model_no_one_may_see_says_so(
    admin, model_version, path, params, named
):
    response = browser(admin).get(path, params)

    assert response.status_code == 400, response.content[:300]
    assert named in response.content.decode() and "names no" in response.content.decode()
