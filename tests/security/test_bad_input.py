"""Bad input is a 4xx in the JSON error shape naming the field, never a 500 (finding 4).

Every request goes through the real endpoints with a real API token; nothing is mocked.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision, Outcome
from auditapp.dossier.api import SEARCH_PARAMETERS
from auditapp.dossier.filters import SEARCH_PARAMETER_NAMES
from auditapp.registry.models import ModelVersion
from auditapp.reviews.models import Feedback
from tests.conftest import PASSWORD
from tests.factories import DecisionPayloadFactory, upload_form

DECISIONS = "/api/v1/decisions"
OUTCOMES = "/api/v1/outcomes"
REPORTS = "/api/v1/reports"
ALL_SCOPES = ["ingest", "read", "report", "admin"]

pytestmark = pytest.mark.usefixtures("model_version")


@pytest.fixture
def engineer(token_client, ml_engineer):
    client, _ = token_client(ml_engineer, ALL_SCOPES)
    return client


@pytest.fixture
def expert(token_client, domain_expert):
    client, _ = token_client(domain_expert, ALL_SCOPES)
    return client


@pytest.fixture
def officer(token_client, compliance_officer):
    client, _ = token_client(compliance_officer, ALL_SCOPES)
    return client


def post_text(client, url: str, text: str | bytes):
    return client.generic("POST", url, text, content_type="application/json")


def decision_with(**fields) -> str:
    return json.dumps(DecisionPayloadFactory(**fields))


def error_of(response, status: int = 400) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


def item_errors(response) -> dict[str, str]:
    """{field: message} of the one invalid decision (or outcome) of a 400."""
    error = error_of(response)
    (item,) = error["details"]
    return {e["field"]: e["message"] for e in item["errors"]}


def named_fields(error: dict) -> set[str]:
    """Field paths named by a body-level error (details {path: [reason]})."""
    return set(error["details"] or {})


# --- text a database cannot store -------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"request_id": "loan-\u0000-1"}, "request_id"),
        ({"subject_ref": "c-\u0000"}, "subject_ref"),
        ({"metadata": {"chan\u0000nel": "branch"}}, "metadata.chan\\u0000nel"),
        ({"metadata": {"channel": "bra\u0000nch"}}, "metadata.channel"),
        ({"metadata": {"notes": ["ok", "\ud800"]}}, "metadata.notes[1]"),
        ({"metadata": {"\udfff": 1}}, "metadata.\\udfff"),
    ],
    ids=["nul_request_id", "nul_subject_ref", "nul_key", "nul_value", "surrogate", "surrogate_key"],
)
def test_nul_and_lone_surrogates_are_refused_naming_the_path(engineer, fields, path):
    response = post_text(engineer, DECISIONS, decision_with(**fields))

    error = error_of(response)
    assert error["code"] == "invalid_json"
    assert named_fields(error) == {path}
    assert Decision.objects.count() == 0


def test_a_nul_inside_a_batch_names_the_item(engineer):
    items = [DecisionPayloadFactory(), DecisionPayloadFactory(subject_ref="\u0000")]

    error = error_of(post_text(engineer, DECISIONS, json.dumps({"decisions": items})))

    assert named_fields(error) == {"decisions[1].subject_ref"}
    assert "U+0000" in error["details"]["decisions[1].subject_ref"][0]


@pytest.mark.parametrize(
    "character",
    ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u202e", "\u2066", "\u2069", "\x07"],
)
@pytest.mark.parametrize("field", ["request_id", "subject_ref"])
def test_invisible_and_bidi_characters_are_refused_in_identifiers(engineer, field, character):
    response = post_text(engineer, DECISIONS, decision_with(**{field: f"loan{character}42"}))

    reasons = item_errors(response)
    assert f"U+{ord(character):04X}" in reasons[field]
    assert Decision.objects.count() == 0


def test_ordinary_non_ascii_identifiers_are_still_accepted(engineer):
    body = decision_with(request_id="prêt-\u03b1-7", subject_ref="ü")
    response = post_text(engineer, DECISIONS, body)
    assert response.status_code == 201, response.content


# --- nesting and size -------------------------------------------------------------------


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_metadata_nested_500_deep_is_refused_naming_the_limit(engineer, settings):
    response = post_text(engineer, DECISIONS, decision_with(metadata=nested(500)))

    error = error_of(response)
    ((path, reasons),) = error["details"].items()
    assert path.startswith("metadata.a.a")
    assert f"deeper than {settings.ATTEST_MAX_JSON_DEPTH} levels" in reasons[0]


def test_metadata_deeper_than_its_own_limit_is_refused(engineer, settings):
    limit = settings.ATTEST_METADATA_MAX_DEPTH
    too_deep = post_text(engineer, DECISIONS, decision_with(metadata=nested(limit + 1)))
    just_right = post_text(engineer, DECISIONS, decision_with(metadata=nested(limit)))

    reasons = item_errors(too_deep)
    assert reasons == {"metadata" + ".a" * limit: f"is nested deeper than {limit} levels"}
    assert just_right.status_code == 201, just_right.content


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_a_body_nested_100000_deep_is_a_400_not_a_recursion_error(engineer, settings, opening):
    closing = "]" if opening == "[" else "}"
    body = opening * 100_000 + "1" + closing * 100_000

    error = error_of(post_text(engineer, DECISIONS, body))

    assert error["code"] == "invalid_json"
    assert f"deeper than {settings.ATTEST_MAX_JSON_DEPTH} levels" in error["message"]


def test_five_megabytes_of_metadata_are_refused(engineer, settings):
    response = post_text(engineer, DECISIONS, decision_with(metadata={"blob": "x" * 5_000_000}))

    reasons = item_errors(response)
    assert "bytes" in reasons["metadata"]
    assert str(settings.ATTEST_METADATA_MAX_BYTES) in reasons["metadata"].replace(",", "")


def test_a_hundred_thousand_metadata_keys_are_refused(engineer, settings):
    metadata = {f"k{i}": i for i in range(100_000)}

    reasons = item_errors(post_text(engineer, DECISIONS, decision_with(metadata=metadata)))

    assert reasons["metadata"].startswith("has 100000 keys")
    assert str(settings.ATTEST_METADATA_MAX_KEYS) in reasons["metadata"].replace(",", "")


def test_metadata_limits_are_settings(engineer, settings):
    settings.ATTEST_METADATA_MAX_KEYS = 2
    response = post_text(engineer, DECISIONS, decision_with(metadata={"a": 1, "b": 2, "c": 3}))
    assert "at most 2" in item_errors(response)["metadata"]


def test_a_70_megabyte_body_is_a_json_413(engineer):
    body = b'{"decisions": ["' + b"x" * 70_000_000 + b'"]}'

    error = error_of(post_text(engineer, DECISIONS, body), status=413)

    assert error["code"] == "too_large"
    assert "64 MiB" in error["message"]
    assert Decision.objects.count() == 0


def test_the_body_limit_is_the_setting(engineer, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    error = error_of(post_text(engineer, DECISIONS, decision_with(metadata={"x": "y" * 1000})), 413)
    assert "1000 bytes" in error["message"].replace(",", "")


def test_a_multipart_upload_counts_its_fields_not_its_files(
    api_client, ml_engineer, skops_artifact, role_groups, settings
):
    """A model artifact may exceed the limit; text fields beyond it are a JSON 413."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(skops_artifact) // 2
    form = upload_form(skops_artifact)
    client = api_client(ml_engineer)

    registered = client.post("/api/v1/models", form, format="multipart")
    too_large = client.post(
        "/api/v1/models",
        upload_form(skops_artifact, version="3", card={"description": "x" * len(skops_artifact)}),
        format="multipart",
    )

    assert registered.status_code == 201, registered.content[:300]
    assert error_of(too_large, 413)["code"] == "too_large"


def test_an_oversized_form_post_to_a_page_is_a_413(domain_expert, decision, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    browser = Client()
    browser.force_login(domain_expert)

    response = browser.post(
        f"/decisions/{decision.pk}/feedback", {"verdict": "agree", "comment": "x" * 2000}
    )

    assert response.status_code == 413
    assert Feedback.objects.count() == 0


# --- predicted_at: a window around now -------------------------------------------------


def moment(**delta) -> str:
    return (timezone.now() + timedelta(**delta)).isoformat()


@pytest.mark.parametrize(
    ("predicted_at", "words"),
    [
        ("0001-01-01T00:00:00+00:00", "more than 3650 days before"),
        ("0001-01-01T00:00:00+05:00", "more than 3650 days before"),
        ("9999-12-31T23:59:59-05:00", "more than 1440 minutes after"),
        (moment(days=-3651), "more than 3650 days before"),
        (moment(hours=25), "more than 1440 minutes after"),
    ],
    ids=["year_1", "year_1_east_of_utc", "year_9999_west_of_utc", "eleven_years_ago", "tomorrow"],
)
def test_predicted_at_outside_the_window_is_refused(engineer, predicted_at, words):
    reasons = item_errors(post_text(engineer, DECISIONS, decision_with(predicted_at=predicted_at)))
    assert words in reasons["predicted_at"]


@pytest.mark.parametrize("delta", [{"days": -3649}, {"hours": 23}])
def test_predicted_at_inside_the_window_is_accepted(engineer, delta):
    response = post_text(engineer, DECISIONS, decision_with(predicted_at=moment(**delta)))
    assert response.status_code == 201, response.content


def test_the_window_is_configurable(engineer, settings):
    settings.ATTEST_PREDICTED_AT_MAX_AGE_DAYS = 30
    settings.ATTEST_PREDICTED_AT_MAX_AHEAD_MINUTES = 5
    old = post_text(engineer, DECISIONS, decision_with(predicted_at=moment(days=-31)))
    ahead = post_text(engineer, DECISIONS, decision_with(predicted_at=moment(minutes=10)))
    assert "more than 30 days before" in item_errors(old)["predicted_at"]
    assert "more than 5 minutes after" in item_errors(ahead)["predicted_at"]


# --- types ---------------------------------------------------------------------------------


def test_a_numeric_version_is_refused_saying_what_is_expected(engineer):
    reasons = item_errors(post_text(engineer, DECISIONS, decision_with(version=1)))
    assert reasons["version"] == 'must be a string such as "1", got the number 1'
    assert Decision.objects.count() == 0


@pytest.mark.parametrize("value", ["1" + "0" * 30, "-" + "9" * 25])
def test_integers_beyond_64_bits_are_refused_naming_the_path(engineer, value):
    body = decision_with(metadata={"n": "__N__"}).replace('"__N__"', value)

    error = error_of(post_text(engineer, DECISIONS, body))

    assert named_fields(error) == {"metadata.n"}


# --- outcomes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "field"),
    [
        ({"model": "credit", "request_id": "loan-\u0000"}, "outcomes[0].request_id"),
        ({"model": "cre\u0000dit", "request_id": "loan-1"}, "outcomes[0].model"),
        ({"decision_id": 10**30}, "outcomes[0].decision_id"),
    ],
    ids=["nul_request_id", "nul_model", "huge_decision_id"],
)
def test_outcomes_with_unstorable_references_are_refused(engineer, outcome, field):
    body = {"outcomes": [{**outcome, "outcome": "bad", "observed_at": moment(hours=-1)}]}

    error = error_of(post_text(engineer, OUTCOMES, json.dumps(body)))

    assert named_fields(error) == {field}
    assert Outcome.objects.count() == 0


@pytest.mark.parametrize(
    "reference",
    [
        {"model": "credit", "request_id": "loan\u200b-1"},
        {"decision_id": 2**62},
        {"decision_id": -1},
    ],
    ids=["zero_width_request_id", "large_decision_id", "negative_decision_id"],
)
def test_outcomes_naming_no_decision_are_a_400(engineer, reference):
    body = {"outcomes": [{**reference, "outcome": "bad", "observed_at": moment(hours=-1)}]}
    reasons = item_errors(post_text(engineer, OUTCOMES, json.dumps(body)))
    assert set(reasons) & {"request_id", "decision_id"}


def test_an_outcome_observed_in_year_1_is_refused(engineer, decision):
    body = {
        "outcomes": [
            {"decision_id": decision.pk, "outcome": "bad", "observed_at": "0001-01-01T00:00:00Z"}
        ]
    }
    reasons = item_errors(post_text(engineer, OUTCOMES, json.dumps(body)))
    assert "more than 3650 days before" in reasons["observed_at"]


# --- feedback ----------------------------------------------------------------------------


@pytest.mark.parametrize("comment", ["a\u0000b", "\ud83d alone"], ids=["nul", "surrogate"])
def test_a_feedback_comment_that_cannot_be_stored_is_a_400(expert, decision, comment):
    body = json.dumps({"verdict": "agree", "comment": comment})

    error = error_of(post_text(expert, f"/api/v1/decisions/{decision.pk}/feedback", body))

    assert named_fields(error) == {"comment"}
    assert Feedback.objects.count() == 0


def test_a_nul_in_the_feedback_form_is_a_400_page_naming_the_field(domain_expert, decision):
    browser = Client()
    assert browser.login(username=domain_expert.username, password=PASSWORD)

    response = browser.post(
        f"/decisions/{decision.pk}/feedback", {"verdict": "agree", "comment": "a\x00b"}
    )

    assert response.status_code == 400
    assert b"comment" in response.content and b"U+0000" in response.content
    assert Feedback.objects.count() == 0


# --- reports -------------------------------------------------------------------------------


def report_body(**changes) -> str:
    body = {
        "kind": "model_compliance",
        "model": "credit",
        "version": "1",
        "from": "2026-11-01T00:00:00Z",
        "to": "2026-12-01T00:00:00Z",
        "format": "csv",
        **changes,
    }
    return json.dumps(body)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        (
            {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T00:00:00Z"},
            "from",
            "before 1970",
        ),
        (
            {"from": "2001-01-01T00:00:00Z", "to": "9999-12-31T00:00:00Z"},
            "to",
            "at most 3660 days",
        ),
        ({"from": "0001-01-01T00:00:00+05:00"}, "from", "before 1970"),
        ({"from": moment(days=3), "to": moment(days=40)}, "from", "in the future"),
        ({"version": 1}, "version", 'a string such as "1"'),
        ({"model": "cre\u200bdit"}, "model", "U+200B"),
    ],
    ids=["year_1_to_9999", "too_long", "year_1_east", "future", "numeric_version", "zero_width"],
)
def test_a_report_period_or_target_that_makes_no_sense_is_refused(officer, changes, field, words):
    error = error_of(post_text(officer, REPORTS, report_body(**changes)))
    assert words in " ".join(error["details"][field])


def test_a_report_nul_in_the_model_name_is_a_400(officer):
    error = error_of(post_text(officer, REPORTS, report_body(model="cre\u0000dit")))
    assert named_fields(error) == {"model"}


# --- query strings, paths, forms --------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/decisions?subject_ref=%00",
        "/api/v1/decisions?feature.sex=%00",
        "/api/v1/decisions?model=credit&feature.sex=%00",
        "/api/v1/models/credit/versions/1%00",
        "/api/v1/audit/events?actor=%00",
        "/api/v1/alerts?model=%00",
    ],
)
def test_a_nul_in_the_url_is_a_json_400_naming_the_parameter(officer, url):
    error = error_of(officer.get(url))
    assert error["code"] == "invalid_parameters"
    assert error["details"]


def test_a_nul_in_a_page_query_is_a_400(compliance_officer):
    browser = Client()
    browser.force_login(compliance_officer)
    response = browser.get("/decisions/", {"subject_ref": "\x00"})
    assert response.status_code == 400
    assert b"subject_ref" in response.content


# --- streamed exports ------------------------------------------------------------------------


def test_a_bad_export_parameter_is_a_400_before_anything_is_streamed(compliance_officer, decision):
    browser = Client()
    browser.force_login(compliance_officer)

    response = browser.get("/decisions/export.csv", {"score_min": "high"})

    assert response.status_code == 400
    assert not response.streaming


@pytest.mark.parametrize("value", ["NaN", "1e400", "-1e400"])
def test_an_export_the_database_refuses_never_breaks_off_mid_stream(
    compliance_officer, decision, value
):
    """The export runs its query before streaming: a failure is an error, not a cut file."""
    browser = Client(raise_request_exception=False)
    browser.force_login(compliance_officer)

    response = browser.get("/decisions/export.csv", {"feature.income__gte": value})

    if response.streaming:  # the database took the value: the whole file arrives
        content = b"".join(response.streaming_content)
        assert content.startswith(b"id,model,version,request_id")
    else:
        assert response.status_code >= 400


# --- same kind of defect elsewhere ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "body", "query"),
    [
        ("GET", None, {"seal_index": "-1", "seal_hash": "x"}),
        ("POST", '{"index": -3, "seal_hash": "x"}', None),
        ("POST", '{"index": 1e400, "seal_hash": "x"}', None),
    ],
    ids=["negative_index", "negative_index_posted", "infinite_index"],
)
def test_verifying_against_a_seal_index_that_cannot_exist_is_a_400(officer, method, body, query):
    url = "/api/v1/audit/verify"
    response = officer.get(url, query) if method == "GET" else post_text(officer, url, body)
    assert error_of(response)["code"] == "invalid_seal"


@pytest.mark.parametrize("methods", [[[]], [{"a": 1}], [None]])
def test_explain_with_methods_that_are_not_names_is_a_400(officer, decision, methods):
    url = f"/api/v1/decisions/{decision.pk}/explain"
    response = post_text(officer, url, json.dumps({"methods": methods}))
    assert "methods" in error_of(response)["message"]


@pytest.mark.parametrize("reference", [{"decision_id": []}, {"model": [], "request_id": {}}])
def test_an_outcome_reference_of_the_wrong_type_is_a_400(engineer, reference):
    body = {"outcomes": [{**reference, "outcome": "bad", "observed_at": moment(hours=-1)}]}
    reasons = item_errors(post_text(engineer, OUTCOMES, json.dumps(body)))
    assert set(reasons) & {"request_id", "decision_id"}


# --- search values the database cannot compare: exact reproductions ---------------------


@pytest.mark.parametrize(
    "query",
    [
        "model=credit&feature.income__gte=NaN",
        "model=credit&feature.income__gte=1e400",
        "model=credit&feature.income=-1e400",
        "feature.income=NaN",
        "has_outcome=maybe",
    ],
)
@pytest.mark.parametrize("url", ["/api/v1/decisions", "/decisions/export.csv"])
def test_search_values_the_database_cannot_compare_are_refused(
    compliance_officer, decision, url, query
):
    browser = Client(raise_request_exception=False)
    browser.force_login(compliance_officer)

    response = browser.get(f"{url}?{query}")

    assert response.status_code == 400
    assert not response.streaming
    assert query.rsplit("&", 1)[-1].split("=")[0].encode() in response.content


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"name": "credit\n"}, "name must be"),
        ({"version": "2\n"}, "version must be"),
        ({"card": json.dumps({"description": "a\u0000b"})}, "card.description"),
        ({"card": json.dumps({"metrics": {"auc": "\ud800"}})}, "card.metrics.auc"),
        ({"card": '{"metrics": {"auc": NaN}}'}, "card.metrics.auc"),
        ({"schema": "[" * 5000 + "]" * 5000}, "schema"),
        ({"explain": json.dumps({"agreement": {"\u0000": 1}})}, "explain.agreement.\\u0000"),
    ],
    ids=[
        *("newline_name", "newline_version", "nul_card", "surrogate_metric", "nan_metric"),
        *("deep_schema", "nul_key"),
    ],
)
def test_a_model_upload_with_unstorable_text_is_a_400(
    api_client, ml_engineer, skops_artifact, role_groups, change, words
):
    form = upload_form(skops_artifact) | change

    response = api_client(ml_engineer).post("/api/v1/models", form, format="multipart")

    assert words in error_of(response)["message"]


@pytest.mark.parametrize(
    "period",
    [
        {"from": "0001-01-01T00:00:00+05:00", "to": "2026-01-01T00:00:00Z"},
        {"from": "2026-01-01T00:00:00Z", "to": "9999-12-31T23:00:00-05:00"},
    ],
    ids=["year_1_east", "year_9999_west"],
)
def test_a_monitoring_window_outside_utc_is_a_400(engineer, period):
    url = "/api/v1/models/credit/versions/1/monitoring"
    assert "outside the years" in error_of(post_text(engineer, url, json.dumps(period)))["message"]
    assert "outside the years" in error_of(engineer.get(url, period))["message"]


@pytest.mark.parametrize(
    "moment",
    ["2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00+25:00"],
    ids=["month_13", "february_30", "offset_25_hours"],
)
def test_a_monitoring_window_at_an_impossible_moment_is_a_400(engineer, moment):
    """Shaped as ISO-8601 but impossible: Django's parser raises ValueError, which was a
    500 on the window's POST and on the snapshots' GET."""
    url = "/api/v1/models/credit/versions/1/monitoring"
    period = {"from": moment, "to": "2026-12-01T00:00:00Z"}
    posted = post_text(engineer, url, json.dumps(period))
    assert posted.status_code == 400 and "from" in error_of(posted)["message"]
    read = engineer.get(url, {"from": moment})
    assert read.status_code == 400 and "from" in error_of(read)["message"]


@pytest.mark.parametrize("text", ['["credit"]', '"credit"', "1"], ids=["list", "text", "number"])
def test_a_model_registration_whose_body_is_not_an_object_is_a_400(engineer, text):
    """A JSON body that is not an object was a 500 (AttributeError on .get)."""
    error = error_of(post_text(engineer, "/api/v1/models", text))
    assert "multipart" in error["message"]
    assert ModelVersion.objects.count() == 1


def test_the_import_command_rejects_unstorable_rows_and_keeps_the_others(model_version, tmp_path):
    good = DecisionPayloadFactory(request_id="import-ok")
    lines = [
        json.dumps(good),
        json.dumps(DecisionPayloadFactory(request_id="import-\u0000")),
        json.dumps(DecisionPayloadFactory(subject_ref="\u202eevil")),
        json.dumps(DecisionPayloadFactory(metadata={"note": "\ud800"})),
        json.dumps(DecisionPayloadFactory(predicted_at="0001-01-01T00:00:00+05:00")),
        "[" * 100_000 + "]" * 100_000,
    ]
    source = tmp_path / "decisions.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = io.StringIO()

    with pytest.raises(CommandError, match="5 row"):
        call_command(
            "import_decisions",
            str(source),
            "--model",
            "credit",
            "--version",
            "1",
            "--no-progress",
            stdout=out,
        )

    assert list(Decision.objects.values_list("request_id", flat=True)) == ["import-ok"]
    report = out.getvalue()
    assert "U+0000" in report and "U+202E" in report and "U+D800" in report


# Every API listing or lookup that takes query parameters, with a misspelt one each.
MISSPELT = [
    ("/api/v1/decisions", {"scor_min": "0.5"}),
    ("/api/v1/audit/events", {"actr": "alice"}),
    ("/api/v1/audit/verify", {"tree_sise": "3"}),
    ("/api/v1/audit/seals", {"limt": "5"}),
    ("/api/v1/audit/consistency", {"first": "1", "secnd": "2"}),
    ("/api/v1/decisions/{decision}/proof", {"tree": "1"}),
    ("/api/v1/audit/events/{event}/proof", {"tree": "1"}),
    ("/api/v1/approvals", {"stat": "pending"}),
    ("/api/v1/alerts", {"stat": "open"}),
    ("/api/v1/models/credit/versions/1/monitoring", {"windw": "week"}),
    ("/api/v1/models/credit/versions/1/labelled-data", {"fromat": "parquet"}),
    ("/api/v1/legal-holds", {"activ": "true"}),
    ("/api/v1/subject-requests", {"subject": "c-1"}),
    # and those that take none: ordr=newest must not read as an order
    ("/api/v1/models", {"ordr": "newest"}),
    ("/api/v1/decisions/{decision}", {"fields": "id"}),
    ("/api/v1/models/credit/traffic", {"arm": "canary"}),
    ("/api/v1/reports", {"stat": "done"}),
    ("/api/v1/audit/seals/latest", {"tree_size": "1"}),
]


@pytest.mark.parametrize("path, params", MISSPELT, ids=[path for path, _ in MISSPELT])
def test_a_misspelt_query_parameter_is_refused_by_name_not_ignored(
    api_client, admin, ingest, path, params
):
    """Ignored, `stat=open` would list every alert and be read as the open ones."""
    (recorded,) = ingest(DecisionPayloadFactory())
    event = AuditEvent.objects.order_by("-pk").first()
    url = path.format(decision=recorded["id"], event=event.pk)

    response = api_client(admin).get(url, params)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_parameters"
    misspelt = next(key for key in params if key not in ("first",))
    assert list(error["details"]) == [misspelt]
    assert "it takes " in error["details"][misspelt][0]


def test_the_search_s_documented_parameters_are_the_ones_it_takes():
    documented = {parameter.name for parameter in SEARCH_PARAMETERS}
    assert documented == set(SEARCH_PARAMETER_NAMES)


# Request bodies with a misspelt field each: refused by name, nothing done.
MISSPELT_BODIES = [
    (
        "/api/v1/reports",
        {"kind": "model_compliance", "model": "credit", "version": "1", "formt": "csv",
         "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
        "formt",
    ),
    ("/api/v1/subject-requests", {"subject_ref": "c-1", "kind": "access", "reason": "asked",
                                  "kindd": "erasure"}, "kindd"),
    (
        "/api/v1/models/credit/versions/1/monitoring",
        {"from": "2026-11-20T00:00:00Z", "to": "2026-11-21T00:00:00Z", "window": "week"},
        "window",
    ),
    # "method" for "methods": both methods were queued, as if none had been named
    ("/api/v1/decisions/{decision}/explain", {"method": ["lime"]}, "method"),
    ("/api/v1/models/credit/versions/1/stage", {"stage": "archived", "why": "old"}, "why"),
    ("/api/v1/approvals/{approval}/approve", {"coment": "checked"}, "coment"),
]  # fmt: skip


@pytest.mark.parametrize(
    "path, body, named", MISSPELT_BODIES, ids=[path for path, _, _ in MISSPELT_BODIES]
)
def test_a_misspelt_body_field_is_refused_by_name_and_nothing_is_done(
    api_client, admin, ingest, path, body, named
):
    (recorded,) = ingest(DecisionPayloadFactory())
    url = path.format(decision=recorded["id"], approval=1)
    before = AuditEvent.objects.count()

    response = api_client(admin).post(url, body, format="json")

    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["details"]) == [named]
    assert AuditEvent.objects.count() == before


# A key given twice in one JSON object: Python's json keeps the last value, other parsers
# the first, so the client's record and Attest's could say different things. Sent as
# {"score": 0.9, ..., "score": 0.2}, a decision was stored with 0.2 and no word said.
def _twice(text: str, key: str, first: str) -> str:
    """`text` with `"key": first, ` inserted before the object's own `"key":`."""
    marker = f'"{key}": '
    assert marker in text
    return text.replace(marker, f"{marker}{first}, {marker}", 1)


@pytest.mark.parametrize(
    ("key", "first"),
    [("score", "0.9"), ("age", "18"), ("request_id", '"other"')],
    ids=["field", "input", "request_id"],
)
def test_a_key_given_twice_in_a_json_body_is_refused_by_name_and_nothing_stored(
    engineer, key, first
):
    body = '{"decisions": [' + decision_with(request_id="twice") + "]}"

    error = error_of(post_text(engineer, "/api/v1/decisions", _twice(body, key, first)))

    assert error["code"] == "invalid_json"
    assert f"'{key}'" in error["message"] and "twice" in error["message"]
    assert not Decision.objects.exists()


def test_the_wrapper_s_key_given_twice_is_refused_too(engineer):
    one = decision_with(request_id="twice")
    body = '{"decisions": [], "decisions": [' + one + "]}"

    error = error_of(post_text(engineer, "/api/v1/decisions", body))

    assert "'decisions'" in error["message"]
    assert not Decision.objects.exists()


def test_a_model_upload_whose_schema_repeats_a_key_is_a_400(
    api_client, ml_engineer, skops_artifact, role_groups
):
    form = upload_form(skops_artifact)
    form["schema"] = _twice(form["schema"], "type", '"float"')

    response = api_client(ml_engineer).post("/api/v1/models", form, format="multipart")

    error = error_of(response)
    assert "'type'" in error["message"] and "twice" in error["message"]


def test_the_import_command_rejects_a_line_that_repeats_a_key(model_version, tmp_path):
    good = DecisionPayloadFactory(request_id="import-ok")
    twice = _twice(json.dumps(DecisionPayloadFactory(request_id="import-twice")), "score", "0.9")
    path = tmp_path / "decisions.jsonl"
    path.write_text(json.dumps(good) + "\n" + twice + "\n")

    out = io.StringIO()
    with pytest.raises(CommandError, match="1 row"):
        call_command(
            "import_decisions", str(path), "--model", "credit", "--version", "1",
            "--no-progress", stdout=out,
        )  # fmt: skip

    assert "line 2" in out.getvalue() and "'score'" in out.getvalue(), out.getvalue()
    assert list(Decision.objects.values_list("request_id", flat=True)) == ["import-ok"]


# A query parameter given twice: Django answers the last, while the URL, as shared or read
# back in the log, shows both. ?score_min=0.99&score_min=0 listed every score.
REPEATED = [
    ("/api/v1/decisions", "score_min=0.99&score_min=0"),
    ("/api/v1/alerts", "state=open&state=acknowledged"),
    ("/api/v1/audit/events", "actor=alice&actor=bob"),
    ("/decisions/", "model=credit&model=credit"),
    ("/review/", "show=resolved&show=open"),
    ("/audit/", "order=oldest&order=newest"),
]


@pytest.mark.parametrize("path, query", REPEATED, ids=[f"{p}?{q}" for p, q in REPEATED])
def test_a_query_parameter_given_twice_is_refused_by_name(engineer, admin, path, query):
    if path.startswith("/api/"):
        response = engineer.get(f"{path}?{query}")
    else:
        browser = Client()
        browser.force_login(admin)
        response = browser.get(f"{path}?{query}")

    assert response.status_code == 400, response.content[:300]
    named = query.split("=")[0]
    text = response.content.decode()
    assert named in text and "once" in text


# Forms (multipart and urlencoded bodies, which every API endpoint also parses): a field
# given twice was read as its last value, and a field registration does not take ignored.
def test_a_model_upload_with_a_field_it_does_not_take_registers_nothing(
    api_client, ml_engineer, skops_artifact, role_groups
):
    form = upload_form(skops_artifact, crad=json.dumps({"description": "the card"}))

    error = error_of(api_client(ml_engineer).post("/api/v1/models", form, format="multipart"))

    assert list(error["details"]) == ["crad"]
    assert not ModelVersion.objects.filter(version="2").exists()


@pytest.mark.parametrize(
    "field, values", [("version", ["2", "3"]), ("artifact_format", ["skops", "joblib"])]
)
def test_a_model_upload_with_a_field_given_twice_registers_nothing(
    api_client, ml_engineer, skops_artifact, role_groups, field, values
):
    form = upload_form(skops_artifact) | {field: values}

    error = error_of(api_client(ml_engineer).post("/api/v1/models", form, format="multipart"))

    assert field in error["message"] and "once" in error["message"]
    assert not ModelVersion.objects.filter(version__in=["2", "3"]).exists()


def test_a_urlencoded_body_with_a_field_given_twice_is_refused(expert, ingest):
    (recorded,) = ingest(DecisionPayloadFactory())
    url = f"/api/v1/decisions/{recorded['id']}/feedback"

    response = expert.generic(
        "POST",
        url,
        "verdict=agree&verdict=disagree",
        content_type="application/x-www-form-urlencoded",
    )

    error = error_of(response)
    assert "verdict" in error["message"] and "once" in error["message"]
    assert not Feedback.objects.exists()


# A parameter with a value it cannot take is named in `details`, as every 400 names its
# fields: clients map errors to fields by `details`, and these said it only in the message.
BAD_VALUES = [
    ("/api/v1/decisions", {"limit": "0"}, "limit"),
    ("/api/v1/decisions", {"ordering": "income"}, "ordering"),
    ("/api/v1/decisions", {"cursor": "abc"}, "cursor"),
    ("/api/v1/audit/events", {"cursor": "abc"}, "cursor"),
    ("/api/v1/audit/seals", {"cursor": "abc"}, "cursor"),
    ("/api/v1/models/credit/versions/1/monitoring", {"window": "fortnight"}, "window"),
    ("/api/v1/alerts", {"state": "asleep"}, "state"),
    ("/api/v1/models/credit/versions/1/labelled-data", {"format": "xlsx"}, "format"),
]


@pytest.mark.parametrize(
    "path, params, named", BAD_VALUES, ids=[f"{p}:{n}" for p, _, n in BAD_VALUES]
)
def test_a_parameter_value_it_cannot_take_is_named_in_details(
    api_client, admin, path, params, named
):
    error = error_of(api_client(admin).get(path, params))

    assert list(error["details"]) == [named], error
    assert named in error["message"]


# A period whose ends are swapped is a mistake, not an empty answer: the access log said
# "No events match these filters", read as "nothing happened then".
SWAPPED = [
    "/api/v1/audit/events",
    "/api/v1/models/credit/versions/1/monitoring",
    "/audit/",
    "/audit/events.csv",
]


@pytest.mark.parametrize("path", SWAPPED)
def test_a_period_whose_ends_are_swapped_is_refused_not_answered_empty(admin, path):
    browser = Client()
    browser.force_login(admin)

    response = browser.get(path, {"from": "2026-12-10T00:00:00Z", "to": "2026-12-01T00:00:00Z"})

    assert response.status_code == 400, response.content[:300]
    assert "from" in response.content.decode() and "before" in response.content.decode()


def test_a_counterfactuals_request_with_a_body_is_refused(officer, decision):
    """It takes no body: a field sent with it was ignored (a number of counterfactuals),
    the answer reading as if it had counted. (An alert's acknowledgement, the same.)"""
    counterfactuals = officer.post(
        f"/api/v1/decisions/{decision.pk}/counterfactuals", {"k": 5}, format="json"
    )
    assert list(error_of(counterfactuals)["details"]) == ["k"]
    assert not AuditEvent.objects.filter(action="decision.counterfactuals_requested").exists()
