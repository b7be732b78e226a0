"""What-if (issue 18, item 4): a decision's inputs edited, its model run and explained at once.

Judged against the registered artifact itself: the answer's score is the loaded pipeline's
own predict_proba on the merged inputs computed here, its SHAP values an independent
shap.TreeExplainer on the same row (summed back to raw features here, not by the engine's
mapping) that add up to the pipeline's own log-odds. Nothing is stored but the audit event.
"""

from __future__ import annotations

import math
import uuid

import lightgbm
import pandas as pd
import pytest
import skops.io
from django.test import Client
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from auditapp.demo.credit import CATEGORICAL, FEATURES
from auditapp.registry.services import load_model
from explain.models import Explanation, ExplanationResult
from explain.whatif import ACTION
from tests.conftest import PASSWORD
from tests.factories import DecisionPayloadFactory
from tests.reference import tree_shap_by_feature

EDITS = {"debt_ratio": 0.12, "prior_defaults": 2, "housing": "own"}


def url(decision) -> str:
    return f"/api/v1/decisions/{decision.pk}/what-if"


def independent_shap(pipeline, inputs: dict, names: list[str]) -> tuple[dict, float, float]:
    """(attributions towards "bad" per raw feature, base value, the pipeline's log-odds of
    "bad"), from shap.TreeExplainer on the transformed row, one-hot columns summed by name."""
    frame = pipeline_frame(inputs, names)
    attributions, base = tree_shap_by_feature(pipeline, frame, names)
    # decision_function is for classes_[1] ("good"); the positive class is "bad".
    sign = 1.0 if list(pipeline[-1].classes_).index("bad") == 1 else -1.0
    per_feature = {name: sign * value for name, value in attributions.items()}
    output = sign * float(pipeline.decision_function(frame)[0])
    return per_feature, sign * base, output


def pipeline_frame(inputs: dict, names: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{n: inputs[n] for n in names}])


@pytest.fixture
def counts():
    def read():
        return (
            Decision.objects.count(),
            Explanation.objects.count(),
            ExplanationResult.objects.count(),
        )

    return read


def test_the_answer_is_the_models_own_score_and_shap(
    api_client, domain_expert, decision, model_version, counts
):
    before = counts()
    response = api_client(domain_expert).post(url(decision), {"inputs": EDITS}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    names = model_version.parsed_schema.names
    merged = {**decision.full_inputs(), **EDITS}
    assert body["inputs"] == merged
    pipeline = load_model(model_version)
    frame = pipeline_frame(merged, names)
    bad = list(pipeline.classes_).index("bad")
    assert body["score"] == pytest.approx(pipeline.predict_proba(frame)[0, bad], abs=1e-12)
    assert body["prediction"] == pipeline.predict(frame)[0]
    changed = [n for n in names if n in EDITS and EDITS[n] != decision.full_inputs()[n]]
    assert body["changed"] == changed

    shap_body = body["explanation"]["shap"]
    expected, base, output = independent_shap(pipeline, merged, names)
    assert list(shap_body["attributions"]) == names  # schema order
    for name in names:
        assert shap_body["attributions"][name] == pytest.approx(expected[name], abs=1e-9)
    assert shap_body["base_value"] == pytest.approx(base, abs=1e-9)
    total = shap_body["base_value"] + sum(shap_body["attributions"].values())
    assert total == pytest.approx(output, abs=1e-6)
    assert 1 / (1 + math.exp(-output)) == pytest.approx(body["score"], abs=1e-9)
    assert shap_body["quality"]["additivity_ok"] is True
    assert shap_body["labels"]["debt_ratio"] == "Debt-to-income ratio"

    # The original, side by side: as recorded, and the model's own answer on its inputs.
    original = body["original"]
    assert (original["prediction"], original["score"]) == (decision.prediction, decision.score)
    recorded = pipeline_frame(decision.full_inputs(), names)
    assert original["model_score"] == pytest.approx(pipeline.predict_proba(recorded)[0, bad])
    expected, _, _ = independent_shap(pipeline, decision.full_inputs(), names)
    for name in names:
        attribution = original["explanation"]["shap"]["attributions"][name]
        assert attribution == pytest.approx(expected[name], abs=1e-9)

    # Never a decision, never an explanation row: one audit event, the changes in it.
    assert counts() == before
    (event,) = AuditEvent.objects.filter(action=ACTION)
    assert event.actor == domain_expert
    assert event.object_id == str(decision.pk)
    assert event.details["via"] == "api"
    assert event.details["changes"] == [
        {"feature": n, "from": decision.full_inputs()[n], "to": EDITS[n]} for n in changed
    ]
    assert event.details["score"] == pytest.approx(body["score"])


def test_a_sensitive_change_is_recorded_in_the_events_sensitive_details(
    api_client, compliance_officer, decision
):
    income = decision.full_inputs()["income"] + 10_000
    response = api_client(compliance_officer).post(
        url(decision), {"inputs": {"income": income}}, format="json"
    )

    assert response.status_code == 200
    (event,) = AuditEvent.objects.filter(action=ACTION)
    assert event.details["changes"] == [{"feature": "income", "from": "[masked]", "to": "[masked]"}]
    assert event.sensitive_details == {
        "changes": {"income": {"from": decision.full_inputs()["income"], "to": income}}
    }


@pytest.mark.parametrize("who", ["ml_engineer", "compliance_officer", "domain_expert", "admin"])
def test_every_reviewing_role_may(api_client, users, who, decision):
    response = api_client(users[who]).post(url(decision), {"inputs": EDITS}, format="json")
    assert response.status_code == 200


def test_the_auditor_is_refused_with_no_data(api_client, auditor, decision, counts):
    before = counts()
    response = api_client(auditor).post(url(decision), {"inputs": EDITS}, format="json")

    assert response.status_code == 403
    body = response.json()
    assert body["error"]["code"] == "forbidden" and "what_if" in body["error"]["message"]
    assert "score" not in response.content.decode()
    assert not AuditEvent.objects.filter(action=ACTION).exists()
    assert AuditEvent.objects.filter(action="access.denied", actor=auditor).exists()
    assert counts() == before
    # A decision that does not exist is refused alike: the 403 comes before the lookup.
    missing = api_client(auditor).post(
        "/api/v1/decisions/999999999/what-if", {"inputs": EDITS}, format="json"
    )
    assert missing.status_code == 403


def test_a_hidden_model_answers_as_a_missing_one(api_client, outsider, decision):
    hidden = api_client(outsider).post(url(decision), {"inputs": EDITS}, format="json")
    missing = api_client(outsider).post(
        "/api/v1/decisions/999999999/what-if", {"inputs": EDITS}, format="json"
    )

    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
    assert hidden.json()["error"]["message"] == f"No decision {decision.pk}."
    assert missing.json()["error"]["message"] == "No decision 999999999."
    assert not AuditEvent.objects.filter(action=ACTION).exists()


def test_a_read_token_may_an_ingest_token_may_not(token_client, domain_expert, decision):
    reader, _ = token_client(domain_expert, ["read"])
    ingester, _ = token_client(domain_expert, ["ingest"])

    assert reader.post(url(decision), {"inputs": EDITS}, format="json").status_code == 200
    assert ingester.post(url(decision), {"inputs": EDITS}, format="json").status_code == 403
    (event,) = AuditEvent.objects.filter(action=ACTION)
    assert event.details["token"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"inputs": {"debt_ratio": "high"}}, "inputs.debt_ratio", "must be a number, got 'high'"),
        ({"inputs": {"debt_ratio": 7}}, "inputs.debt_ratio", "must be ≤ 3"),
        ({"inputs": {"age": 12}}, "inputs.age", "must be ≥ 18"),
        ({"inputs": {"age": 40.5}}, "inputs.age", "must be an integer"),
        ({"inputs": {"housing": "castle"}}, "inputs.housing", "is not a known category"),
        ({"inputs": {"has_guarantor": "yes"}}, "inputs.has_guarantor", "must be true or false"),
        ({"inputs": {"shoe_size": 44}}, "inputs.shoe_size", "is not a feature of this model"),
        ({"inputs": {}}, "inputs", "is empty"),
        ({}, "inputs", "must be an object"),
        ({"inputs": [1, 2]}, "inputs", "must be an object"),
        ({"inputs": {"age": 30}, "extra": 1}, "extra", "is not a what-if field"),
    ],
)
def test_bad_inputs_are_refused_naming_the_field(
    api_client, domain_expert, decision, body, field, message
):
    response = api_client(domain_expert).post(url(decision), body, format="json")

    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert any(d["field"] == field and message in d["message"] for d in details), details
    assert not AuditEvent.objects.filter(action=ACTION).exists()


def test_a_body_that_is_not_an_object_is_refused(api_client, domain_expert, decision):
    response = api_client(domain_expert).post(url(decision), [1, 2], format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_a_session_post_needs_the_csrf_token(domain_expert, decision):
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="domain_expert", password=PASSWORD)
    response = client.post(url(decision), {"inputs": EDITS}, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


# --- masked features: unrecoverable through the what-if --------------------------------------


@pytest.fixture
def blind_expert(monkeypatch, domain_expert):
    """A domain expert whose role may what-if but not see sensitive values. No role is so
    today (every role with what_if has view_sensitive): the rule is what holds if one is."""
    capabilities = roles.ROLE_CAPABILITIES[roles.DOMAIN_EXPERT] - {roles.VIEW_SENSITIVE}
    monkeypatch.setitem(roles.ROLE_CAPABILITIES, roles.DOMAIN_EXPERT, capabilities)
    return domain_expert


def test_masked_features_must_be_supplied_never_taken_from_the_decision(
    api_client, blind_expert, decision
):
    client = api_client(blind_expert)
    refused = client.post(url(decision), {"inputs": {"debt_ratio": 0.2}}, format="json")

    assert refused.status_code == 400
    details = refused.json()["error"]["details"]
    assert {d["field"] for d in details} == {"inputs.income", "inputs.sex"}
    assert all("hidden from you" in d["message"] for d in details)
    assert str(decision.full_inputs()["income"]) not in refused.content.decode()
    assert not AuditEvent.objects.filter(action=ACTION).exists()

    # Given, they are the actor's: the row run is theirs alone.
    guess = {"debt_ratio": 0.2, "income": 50_000.0, "sex": decision.full_inputs()["sex"]}
    response = client.post(url(decision), {"inputs": guess}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["inputs"]["income"] == 50_000.0
    assert body["changed"] == ["debt_ratio"]  # whether a guess is right is said nowhere
    assert body["supplied_masked"] == ["income", "sex"]  # as masked_features lists them
    original = body["original"]
    assert original["inputs"]["income"] == original["inputs"]["sex"] == "[masked]"
    attributions = original["explanation"]["shap"]["attributions"]
    assert attributions["income"] is None and attributions["sex"] is None
    assert "income" not in original["explanation"]["shap"]["top_features"]
    text = response.content.decode()
    assert (
        repr(decision.full_inputs()["income"]) not in text
        and str(decision.full_inputs()["income"]) not in text
    )
    # The event says they were given, never whether the guess was right, nor the hidden value.
    (event,) = AuditEvent.objects.filter(action=ACTION)
    supplied = [c for c in event.details["changes"] if c.get("supplied")]
    assert {c["feature"] for c in supplied} == {"income", "sex"}
    assert all(c["from"] == c["to"] == "[masked]" for c in supplied)
    assert event.sensitive_details["changes"]["income"] == {"to": 50_000.0}
    assert "from" not in event.sensitive_details["changes"]["sex"]


@pytest.fixture(scope="module")
def lightgbm_pipeline(credit_frame):
    """The demo's one-hot encoding before a LightGBM (a native-input library)."""
    estimator = lightgbm.LGBMClassifier(
        n_estimators=40, max_depth=4, num_leaves=15, n_jobs=1, verbose=-1, random_state=0
    )
    prep = ColumnTransformer(
        [("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)],
        remainder="passthrough",
    )
    pipeline = Pipeline([("prep", prep), ("model", estimator)])
    return pipeline.fit(credit_frame[FEATURES], credit_frame["outcome"])


@pytest.mark.filterwarnings("ignore:LightGBM binary classifier")
def test_a_lightgbm_version_answers_with_its_own_score_and_treeshap(
    api_client, register, ml_engineer, ingest, lightgbm_pipeline
):
    register(ml_engineer, name="credit-lgbm", artifact=skops.io.dumps(lightgbm_pipeline))
    (result,) = ingest(DecisionPayloadFactory(model="credit-lgbm"))
    decision = Decision.objects.get(pk=result["id"])
    response = api_client(ml_engineer).post(url(decision), {"inputs": EDITS}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    names = decision.model_version.parsed_schema.names
    pipeline = load_model(decision.model_version)
    frame = pipeline_frame({**decision.full_inputs(), **EDITS}, names)
    bad = list(pipeline.classes_).index("bad")
    assert body["score"] == pytest.approx(pipeline.predict_proba(frame)[0, bad], abs=1e-12)
    assert body["prediction"] == pipeline.predict(frame)[0]
    # An independent TreeExplainer on the transformed row, one-hot columns summed by name.
    attributions, _ = tree_shap_by_feature(pipeline, frame, names)
    sign = -1.0 if bad == 0 else 1.0  # LightGBM's raw score is for classes_[1]
    expected = {name: sign * value for name, value in attributions.items()}
    shap_body = body["explanation"]["shap"]
    for name in names:  # LightGBM computes in single precision
        assert shap_body["attributions"][name] == pytest.approx(expected[name], abs=1e-5)
    margin = sign * float(pipeline.predict(frame, raw_score=True)[0])
    total = shap_body["base_value"] + sum(shap_body["attributions"].values())
    assert total == pytest.approx(margin, abs=1e-4)
    assert shap_body["quality"]["additivity_ok"] is True


# --- the model actually changes its answer ----------------------------------------------------


def test_a_riskier_applicant_scores_higher(api_client, ml_engineer, model_version, ingest):
    (result,) = ingest(DecisionPayloadFactory())
    decision = Decision.objects.get(pk=result["id"])
    client = api_client(ml_engineer)
    safe = client.post(url(decision), {"inputs": {"prior_defaults": 0}}, format="json").json()
    risky = client.post(url(decision), {"inputs": {"prior_defaults": 6}}, format="json").json()
    assert risky["score"] >= safe["score"]
    assert AuditEvent.objects.filter(action=ACTION).count() == 2


def test_the_access_log_shows_a_sensitive_value_only_to_view_sensitive(
    api_client, compliance_officer, auditor, decision
):
    edits = {"income": 123457.0, "debt_ratio": 0.31}
    assert api_client(compliance_officer).post(url(decision), {"inputs": edits}, format="json")

    for user, opened in ((auditor, False), (compliance_officer, True)):
        client = Client()
        client.force_login(user)
        page = client.get("/audit/", {"action": "decision."}).content.decode()
        assert "tried a what-if on" in page and "income [masked] → [masked]" in page
        assert "123457" not in page and "123,457" not in page
        download = client.get("/audit/events.csv", {"action": "decision."})
        text = b"".join(download.streaming_content).decode()
        assert ("123457" in text) == opened


# --- the decision page's panel -----------------------------------------------------------------


def browser_as(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_of(decision, **changes) -> dict:
    values = {
        k: ("true" if v is True else "false" if v is False else str(v))
        for k, v in decision.full_inputs().items()
    }
    return {**values, **changes}


def test_the_panel_is_shown_to_those_who_may(domain_expert, auditor, decision):
    page = browser_as(domain_expert).get(f"/decisions/{decision.pk}/").content.decode()
    assert 'id="what-if"' in page and f'hx-post="/decisions/{decision.pk}/what-if"' in page
    assert f'name="debt_ratio" value="{decision.full_inputs()["debt_ratio"]}"' in page
    audited = browser_as(auditor).get(f"/decisions/{decision.pk}/").content.decode()
    assert 'id="what-if"' not in audited
    refused = browser_as(auditor).post(f"/decisions/{decision.pk}/what-if", form_of(decision))
    assert refused.status_code == 403
    assert not AuditEvent.objects.filter(action=ACTION).exists()


def test_the_panel_answers_htmx_with_both_sides(domain_expert, decision, counts):
    before = counts()
    response = browser_as(domain_expert).post(
        f"/decisions/{decision.pk}/what-if",
        form_of(decision, debt_ratio="0.05", prior_defaults="0"),
        HTTP_HX_REQUEST="true",
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card what-if" id="what-if">')
    assert 'id="what-if-original"' in html and 'id="what-if-new"' in html
    assert html.count("<svg") >= 2  # both waterfalls
    assert 'data-feature="debt_ratio" class="changed"' in html
    (event,) = AuditEvent.objects.filter(action=ACTION)
    assert event.details["via"] == "page"
    assert [c["feature"] for c in event.details["changes"]][:1] == ["debt_ratio"]
    assert counts() == before


def test_the_panel_shows_an_error_beside_its_field(domain_expert, decision):
    client = browser_as(domain_expert)
    response = client.post(
        f"/decisions/{decision.pk}/what-if",
        form_of(decision, debt_ratio="9", age="old"),
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 400  # htmx swaps it in (base.html's responseHandling)
    assert 'data-feature="debt_ratio" class="invalid"' in html and "must be ≤ 3" in html
    assert 'data-feature="age" class="invalid"' in html and "must be a number" in html
    assert 'id="what-if-result"' not in html
    assert not AuditEvent.objects.filter(action=ACTION).exists()
    # Without htmx: the whole page, 400.
    plain = client.post(f"/decisions/{decision.pk}/what-if", form_of(decision, debt_ratio="9"))
    assert plain.status_code == 400 and "must be ≤ 3" in plain.content.decode()


def test_the_panel_asks_for_masked_features_and_never_shows_them(blind_expert, decision):
    client = browser_as(blind_expert)
    page = client.get(f"/decisions/{decision.pk}/").content.decode()
    hidden = str(decision.full_inputs()["income"])
    assert 'name="income" value=""' in page and hidden not in page
    response = client.post(
        f"/decisions/{decision.pk}/what-if",
        form_of(decision, income="", sex=""),
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert "hidden from you" in html and hidden not in html
    response = client.post(
        f"/decisions/{decision.pk}/what-if",
        form_of(decision, income="50000", sex="female"),
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert 'id="what-if-result"' in html and hidden not in html
    assert 'data-feature="income" class="given"' in html


def test_the_openapi_document_describes_it(api_client, domain_expert):
    document = api_client(domain_expert).get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = document["paths"]["/api/v1/decisions/{decision_id}/what-if"]["post"]
    assert operation["operationId"] == "decisions_what_if"
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/WhatIfRequest")
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert answer.endswith("/WhatIfResponse")
    shapes = document["components"]["schemas"]
    assert {"prediction", "score", "explanation", "original"} <= set(
        shapes["WhatIfResponse"]["properties"]
    )
    assert shapes["WhatIfRequest"]["required"] == ["inputs"]


def test_the_panel_counts_against_the_apis_rate_limits(settings, domain_expert, decision):
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "KEY_PREFIX": f"t-{uuid.uuid4().hex}"}
    }
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"token": "3/hour", "address": "6000/min"},
    }
    client = browser_as(domain_expert)
    sent = [
        client.post(f"/decisions/{decision.pk}/what-if", form_of(decision), HTTP_HX_REQUEST="true")
        for _ in range(3)
    ]
    assert [r.status_code for r in sent] == [200, 200, 200]
    over = client.post(f"/decisions/{decision.pk}/what-if", form_of(decision))
    assert over.status_code == 429 and int(over["Retry-After"]) > 0
    # htmx is given the panel with the wait in it (swapped, base.html), not a bare text it
    # would drop: the button had seemed to do nothing
    panel = client.post(
        f"/decisions/{decision.pk}/what-if", form_of(decision), HTTP_HX_REQUEST="true"
    )
    assert panel.status_code == 429 and int(panel["Retry-After"]) > 0
    html = panel.content.decode()
    assert "Too many tries" in html and 'name="debt_ratio"' in html
    api = Client()
    api.force_login(domain_expert)
    refused = api.post(url(decision), {"inputs": EDITS}, content_type="application/json")
    assert refused.status_code == 429  # one budget, page and API
    assert AuditEvent.objects.filter(action=ACTION).count() == 3
