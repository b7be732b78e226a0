"""Fuzzing the API: no payload, from any role, gets a 5xx; every error is the JSON error shape.

Two fuzzers, both deterministic (derandomized, fixed seeds) and bounded by example
counts so that the module stays well under two minutes:
- hypothesis: random JSON and raw text into every endpoint that takes a JSON body,
  with NUL, lone surrogates, invisible and bidi characters, huge and non-finite
  numbers and deep nesting mixed in, as a random role's real API token;
- schemathesis: every operation of the OpenAPI document (/api/schema/), each case
  sent once with the generated path and once more with the path of a real model,
  decision and report, as the next two roles in turn, through Django's WSGI application.
The counts of payloads tried and 5xx found are printed at the end of the module.
"""

from __future__ import annotations

import json
from collections import Counter
from urllib.parse import quote

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from auditapp.accounts import roles
from auditapp.decisions.models import Decision
from auditapp.reports import services as report_services
from auditapp.reviews.services import flag_decision
from auditapp.wsgi import application
from tests.conftest import second_database_run
from tests.factories import (
    MODEL_NAME,
    VERSION,
    DecisionPayloadFactory,
    an_hour_ago,
    credit_schema,
)

# embedded: SQLite's JSON functions and the embedded broker answer bad input too (tests/conftest.py)
pytestmark = pytest.mark.embedded

ROLES = roles.ROLES
ALL_SCOPES = ["ingest", "read", "report", "admin"]
TRIED: Counter[str] = Counter()  # payloads sent, per fuzzer
SERVER_ERRORS: Counter[str] = Counter()  # 5xx answers, per fuzzer (the tests fail on any)

# Hypothesis examples per test; schemathesis examples per operation (each sent twice).
# CI's second run, on the embedded default, tries a quarter of them (tests/conftest.py).
HYPOTHESIS_EXAMPLES = 60 if second_database_run() else 250
SCHEMATHESIS_EXAMPLES = 10 if second_database_run() else 30
QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much]
FUZZ_SETTINGS = settings(
    max_examples=HYPOTHESIS_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=QUIET,
)
SCHEMATHESIS_SETTINGS = settings(FUZZ_SETTINGS, max_examples=SCHEMATHESIS_EXAMPLES)


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    """Print how many payloads each fuzzer tried and how many 5xx it found (past capture)."""
    yield
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for fuzzer in ("hypothesis", "schemathesis", FILTERS_FUZZER):
            print(
                f"\nfuzz: {fuzzer} tried {TRIED[fuzzer]} payloads, "
                f"{SERVER_ERRORS[fuzzer]} answered 5xx"
            )


# --- the world the fuzzers act on -------------------------------------------------------


@pytest.fixture
def world(users, model_version, ingest, token_client, compliance_officer, domain_expert):
    """Every role's token and a logged-in browser; a decision with a review case, a report."""
    (result,) = ingest(DecisionPayloadFactory())
    decision = Decision.objects.get(pk=result["id"])
    case = flag_decision(roles.Actor(user=domain_expert), decision, "fuzzing")
    report = report_services.request_report(
        roles.Actor(user=compliance_officer),
        {
            "kind": "model_compliance",
            "model": MODEL_NAME,
            "version": VERSION,
            "from": "2026-01-01T00:00:00Z",
            "to": "2026-02-01T00:00:00Z",
            "format": "json",
        },
    )
    clients, tokens, browsers = {}, {}, {}
    for role in ROLES:
        client, _ = token_client(users[role], ALL_SCOPES)
        clients[role] = client
        tokens[role] = client._credentials["HTTP_AUTHORIZATION"]
        browsers[role] = Client()
        browsers[role].force_login(users[role])
    return {
        "clients": clients,
        "tokens": tokens,
        "browsers": browsers,
        "decision_id": result["id"],
        "case_id": case.pk,
        "report_id": report.pk,
    }


def check(response, fuzzer: str, what: str) -> None:
    """No 5xx; an API error is {"error": {"code", "message", "details"}}."""
    TRIED[fuzzer] += 1
    if response.status_code >= 500:
        SERVER_ERRORS[fuzzer] += 1
        raise AssertionError(f"{response.status_code} for {what}")
    if response.status_code >= 400 and response.get("Content-Type", "").startswith(
        "application/json"
    ):
        body = response.json()
        assert set(body) == {"error"}, (what, body)
        assert {"code", "message", "details"} == set(body["error"]), (what, body)


# --- hypothesis: JSON bodies -----------------------------------------------------------

NASTY = [
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "\u200b",
    "\u202e",
    "\u2066",
    "\ufeff",
    "\t=1+1",
    "\r",
    "=HYPERLINK(1)",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01",
    "NaN",
    "1e400",
    "9" * 40,
    "",
]
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(NASTY),
    st.tuples(st.text(max_size=4), st.sampled_from(NASTY)).map("".join),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)


def nested(depth: int, opening: str) -> str:
    closing = {"[": "]", '{"a":': "}"}[opening]
    return opening * depth + "1" + closing * depth


RAW_BODIES = st.one_of(
    st.text(max_size=40),
    st.builds(nested, st.integers(min_value=1, max_value=5000), st.sampled_from(["[", '{"a":'])),
    st.sampled_from(['{"a": 1e400}', '{"a": -1e400}', '{"a": NaN}', "[" * 50, '"\\ud800"']),
)


def dumps(value) -> str:
    return json.dumps(value, allow_nan=True)


def base_decision() -> dict:
    return DecisionPayloadFactory.build(request_id="fuzz-1", predicted_at=an_hour_ago())


@st.composite
def decision_bodies(draw) -> str:
    """A valid decision with one field (top level, an input or metadata) made hostile."""
    item = base_decision()
    where = draw(st.sampled_from(["top", "input", "metadata", "extra", "batch", "whole"]))
    value = draw(JSON)
    if where == "top":
        item[draw(st.sampled_from(sorted(item)))] = value
    elif where == "input":
        item["inputs"][draw(st.sampled_from(sorted(item["inputs"])))] = value
    elif where == "metadata":
        item["metadata"] = {draw(TEXT): value}
    elif where == "extra":
        item[draw(TEXT)] = value
    elif where == "batch":
        return dumps({"decisions": [base_decision(), item, value]})
    else:
        return dumps(value)
    return dumps(item)


@st.composite
def outcome_bodies(draw, decision_id: int) -> str:
    item = {"decision_id": decision_id, "outcome": "bad", "observed_at": an_hour_ago()}
    by_reference = {"model": MODEL_NAME, "request_id": "fuzz-1", **item}
    by_reference.pop("decision_id")
    chosen = draw(st.sampled_from([item, by_reference]))
    chosen[draw(st.sampled_from([*sorted(chosen), "extra"]))] = draw(JSON)
    return dumps(draw(st.sampled_from([{"outcomes": [chosen]}, chosen, {"outcomes": chosen}])))


@st.composite
def object_bodies(draw, valid: dict) -> str:
    """A valid body of an endpoint with one field replaced, added, or the whole body random."""
    body = dict(valid)
    if draw(st.booleans()):
        return dumps(draw(JSON))
    body[draw(st.sampled_from([*sorted(valid), "extra"]))] = draw(JSON)
    return dumps(body)


@st.composite
def what_if_bodies(draw) -> str:
    """A what-if with one input (a feature, or a name no feature has) set to any JSON."""
    inputs: dict = {"debt_ratio": 0.2, "housing": "own"}
    names = [f["name"] for f in credit_schema()["features"]]
    inputs[draw(st.sampled_from([*names, "extra", ""]))] = draw(JSON)
    return dumps({"inputs": inputs})


def send(world, role: str, method: str, url: str, body: str) -> None:
    client = world["clients"][role]
    with transaction.atomic():  # a failed statement cannot poison the next example
        try:
            response = client.generic(method, url, body, content_type="application/json")
        except Exception:  # the test client re-raises what the server answered 500 to
            TRIED["hypothesis"] += 1
            SERVER_ERRORS["hypothesis"] += 1
            raise
        check(response, "hypothesis", f"{role} {method} {url} {body[:300]!r}")


@FUZZ_SETTINGS
@given(role=st.sampled_from(ROLES), body=st.one_of(decision_bodies(), RAW_BODIES))
def test_fuzz_decision_ingestion(world, role, body):
    send(world, role, "POST", "/api/v1/decisions", body)


@FUZZ_SETTINGS
@given(role=st.sampled_from(ROLES), data=st.data())
def test_fuzz_outcomes_feedback_and_explain(world, role, data):
    decision = world["decision_id"]
    url, body = data.draw(
        st.one_of(
            st.tuples(st.just("/api/v1/outcomes"), outcome_bodies(decision)),
            st.tuples(
                st.just(f"/api/v1/decisions/{decision}/feedback"),
                object_bodies(
                    {"verdict": "disagree", "corrected_label": "bad", "explanation_rating": 3}
                    | {"comment": "fine"}
                ),
            ),
            st.tuples(
                st.just(f"/api/v1/decisions/{decision}/explain"),
                object_bodies({"methods": ["shap"]}),
            ),
            st.tuples(
                st.just(f"/api/v1/decisions/{decision}/what-if"),
                st.one_of(what_if_bodies(), object_bodies({"inputs": {"age": 30}}), RAW_BODIES),
            ),
            st.tuples(st.sampled_from(["/api/v1/outcomes"]), RAW_BODIES),
        )
    )
    send(world, role, "POST", url, body)


REPORT = {
    "kind": "model_compliance",
    "model": MODEL_NAME,
    "version": VERSION,
    "from": "2026-11-01T00:00:00Z",
    "to": "2026-12-01T00:00:00Z",
    "format": "csv",
}
MONITORING = f"/api/v1/models/{MODEL_NAME}/versions/{VERSION}/monitoring"


@FUZZ_SETTINGS
@given(role=st.sampled_from(ROLES), data=st.data())
def test_fuzz_reports_monitoring_registry_and_audit(world, role, data):
    method, url, body = data.draw(
        st.one_of(
            st.tuples(st.just("POST"), st.just("/api/v1/reports"), object_bodies(REPORT)),
            st.tuples(
                st.just("POST"),
                st.just("/api/v1/reports"),
                object_bodies({"kind": "decision_notice", "decision_id": 1, "format": "json"}),
            ),
            st.tuples(
                st.just("POST"),
                st.just(MONITORING),
                object_bodies({"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}),
            ),
            st.tuples(
                st.just("PUT"),
                st.just(MONITORING + "/settings"),
                object_bodies({"reference": "background", "protected_features": ["sex"]}),
            ),
            st.tuples(
                st.just("POST"),
                st.just(f"/api/v1/models/{MODEL_NAME}/versions/{VERSION}/stage"),
                object_bodies({"stage": "production"}),
            ),
            st.tuples(
                st.just("POST"),
                st.just("/api/v1/audit/verify"),
                object_bodies({"index": 1, "seal_hash": "0" * 64}),
            ),
        )
    )
    send(world, role, method, url, body)


# --- hypothesis: searches, listings and downloads (query strings) --------------------------

SEARCH_PARAMETERS = [
    *("model", "version", "from", "to", "prediction", "score_min", "score_max", "subject_ref"),
    *("top_reason", "has_outcome", "feedback", "review", "ordering", "cursor", "limit"),
    *("actor", "action", "object_type", "object_id", "window", "state", "format", "seal_index"),
    "seal_hash",
]
QUERY = st.dictionaries(st.sampled_from(SEARCH_PARAMETERS), TEXT, max_size=4)
LISTINGS = [
    ("clients", "/api/v1/decisions"),
    ("clients", "/api/v1/audit/events"),
    ("clients", "/api/v1/audit/verify"),
    ("clients", "/api/v1/alerts"),
    ("clients", "/api/v1/reports"),
    ("clients", MONITORING),
    ("clients", f"/api/v1/models/{MODEL_NAME}/versions/{VERSION}/labelled-data"),
    ("browsers", "/decisions/"),
    ("browsers", "/decisions/export.csv"),
    ("browsers", "/audit/"),
    ("browsers", "/audit/events.csv"),
    ("browsers", "/review/"),
    ("browsers", "/reports/"),
    ("browsers", f"/models/{MODEL_NAME}/versions/{VERSION}/labelled.csv"),
]


def query_string(params: dict) -> str:
    """Percent-encoded UTF-8, a lone surrogate as the bytes a hostile client would send."""
    return "&".join(
        f"{quote(key)}={quote(value.encode('utf-8', 'surrogatepass'))}"
        for key, value in params.items()
    )


def get(world, role: str, kind: str, url: str, params: dict, fuzzer="hypothesis") -> None:
    client = world[kind][role]
    with transaction.atomic():
        try:
            response = client.get(f"{url}?{query_string(params)}")
            if response.streaming:  # a download must not break off mid-stream
                b"".join(response.streaming_content)
        except Exception:
            TRIED[fuzzer] += 1
            SERVER_ERRORS[fuzzer] += 1
            raise
        check(response, fuzzer, f"{role} GET {url} {params!r}")


@FUZZ_SETTINGS
@given(role=st.sampled_from(ROLES), where=st.sampled_from(LISTINGS), params=QUERY)
def test_fuzz_searches_listings_and_downloads(world, role, where, params):
    kind, url = where
    get(world, role, kind, url, params)


# --- hypothesis: the pages' forms ------------------------------------------------------------

FORMS = {
    "feedback": ["verdict", "comment", "corrected_label", "explanation_rating"],
    "flag": ["note"],
    "resolve": ["resolution", "outcome", "rationale"],
    "reports": ["target", "from", "to", "format"],
    "notice": ["format"],
}


def form_url(form: str, world) -> str:
    decision, case = world["decision_id"], world["case_id"]
    return {
        "feedback": f"/decisions/{decision}/feedback",
        "flag": f"/decisions/{decision}/flag",
        "resolve": f"/review/{case}/resolve",
        "reports": "/reports/",
        "notice": f"/decisions/{decision}/notice",
    }[form]


@FUZZ_SETTINGS
@given(role=st.sampled_from(ROLES), data=st.data())
def test_fuzz_page_forms(world, role, data):
    form = data.draw(st.sampled_from(sorted(FORMS)))
    fields = data.draw(st.dictionaries(st.sampled_from(FORMS[form]), TEXT, max_size=4))
    client = world["browsers"][role]
    url = form_url(form, world)
    with transaction.atomic():
        try:
            response = client.post(
                url, query_string(fields), content_type="application/x-www-form-urlencoded"
            )
        except Exception:
            TRIED["hypothesis"] += 1
            SERVER_ERRORS["hypothesis"] += 1
            raise
        check(response, "hypothesis", f"{role} POST {url} {fields!r}")


FILTERS_FUZZER = "hypothesis on feature filters"
FEATURE_PARAMETERS = ["income", "income__gte", "age__lte", "debt_ratio__gte", "sex", "housing"]
NUMBERS = ["NaN", "nan", "Infinity", "-inf", "1e400", "-1e400", "1e308", "9" * 400, "0x10", "1_0"]


@FUZZ_SETTINGS
@given(
    role=st.sampled_from(ROLES),
    where=st.sampled_from([("clients", "/api/v1/decisions"), *LISTINGS[7:9]]),
    name=st.sampled_from(FEATURE_PARAMETERS),
    value=st.one_of(st.sampled_from(NUMBERS), TEXT),
    model=st.sampled_from([None, MODEL_NAME]),
)
def test_fuzz_feature_filters(world, role, where, name, value, model):
    kind, url = where
    params = {f"feature.{name}": value} | ({"model": model} if model else {})
    get(world, role, kind, url, params, fuzzer=FILTERS_FUZZER)


# --- schemathesis: every operation of the OpenAPI document --------------------------------
# Cases come from each operation's strategies (valid and invalid data) and are sent
# through Django's WSGI application; schemathesis.pytest.from_fixture is not used, as
# it sets Node._nodeid, which pytest 9.2 no longer has.


@pytest.fixture
def api_schema(world):
    """The OpenAPI document as the application serves it, called through its WSGI app.

    Django's test client keeps the test's database connection (and its
    transaction) across requests by disconnecting close_old_connections from the
    request signals; the WSGI handler needs the same.
    """
    report_services.generate_report(world["report_id"])  # so that its download is fuzzed too
    # The document is for signed-in users only: read it as one (through the test
    # client, before the signals change), then send the cases to the WSGI app.
    document = world["browsers"]["admin"].get(
        "/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )
    assert document.status_code == 200, document.content[:200]
    config = SchemathesisConfig.from_dict({"seed": 20261205})
    schema = schemathesis.openapi.from_dict(json.loads(document.content), config=config)
    schema.app = application
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield schema
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


def real_path(case, world) -> dict:
    """The case's path parameters pointing at objects that exist."""
    known = {
        "name": MODEL_NAME,
        "version": VERSION,
        "decision_id": world["decision_id"],
        "report_id": world["report_id"],
        "alert_id": 1,
    }
    return {key: known.get(key, value) for key, value in (case.path_parameters or {}).items()}


def call(case, role: str, token: str) -> None:
    with transaction.atomic():  # a failed statement cannot poison the next case
        response = case.call(headers={"Authorization": token})
        TRIED["schemathesis"] += 1
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except (Exception, BaseExceptionGroup):  # schemathesis' FailureGroup is a group
            SERVER_ERRORS["schemathesis"] += 1
            raise AssertionError(f"{role}: {case.as_curl_command()}") from None
        if response.status_code >= 400 and "json" in response.headers.get("content-type", [""])[0]:
            body = response.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}


def operation_strategy(operation):
    return st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )


# The operations are fuzzed in shards, tests of their own, so that parallel test workers
# share them (one test of every operation was the suite's longest by four times).
SHARDS = 4


@pytest.mark.parametrize("shard", range(SHARDS))
def test_no_operation_answers_5xx_to_any_role(api_schema, world, shard):
    """Each case twice, as the next roles in turn: with its generated path, then on real
    objects (every role meets every operation: each sends a fifth of its cases)."""
    tokens = list(world["tokens"].items())
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 25, len(operations)

    for operation in operations[shard::SHARDS]:

        @SCHEMATHESIS_SETTINGS
        @given(case=operation_strategy(operation))
        def run(case):
            role, token = tokens[TRIED["schemathesis"] % len(tokens)]
            call(case, role, token)
            if case.path_parameters:
                case.path_parameters = real_path(case, world)
            role, token = tokens[TRIED["schemathesis"] % len(tokens)]
            call(case, role, token)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # every operation is fuzzed; listed together
            failures.append(f"{operation.label}: {exc}")

    assert not failures, "\n".join(failures)
