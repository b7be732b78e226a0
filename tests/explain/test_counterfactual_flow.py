"""Counterfactuals per decision, end to end (issue 18): adverse decisions recorded get a work
row, a real Celery worker on the `explain-cf` queue searches and stores them, and this test
re-scores every stored counterfactual itself: it loads the registered pipeline, builds the
changed row and calls predict / predict_proba, and checks the decision flips, the score is
the one stored, and no immutable or protected feature changed, directions, bounds and steps
held. On the demo's credit model and on German credit and Adult models registered here.

Then the API (GET, POST 202, roles, a hidden model, masking), the decision page's section,
and the notice's sentence (pdftotext). The API tests run on SQLite too.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import skops.io
from django.utils import timezone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.decisions.models import Decision
from auditapp.decisions.services import record_decisions
from auditapp.registry.services import VersionUpload, load_model, register_model_version
from explain import counterfactual_work, tasks
from explain.counterfactual_presenters import sentence
from explain.models import CounterfactualResult, CounterfactualWork
from tests.datasets import (
    ADULT_CATEGORICAL,
    GERMAN_CATEGORICAL,
    GERMAN_NUMERIC,
    adult,
    german_credit,
    german_schema,
)
from tests.factories import MODEL_CARD, applicant_inputs
from tests.reference import tree_shap_by_feature
from tests.workers import wait_until


# -- helpers ---------------------------------------------------------------------------------
def plain(value):
    return value.item() if hasattr(value, "item") else value


def real_payloads(model_version, rows: list[dict], *, prefix: str) -> list[dict]:
    """Decision payloads with the registered pipeline's own predictions and scores."""
    model = load_model(model_version)
    schema = model_version.parsed_schema
    frame = pd.DataFrame(rows)[schema.names]
    labels = model.predict(frame)
    positive = list(model.classes_).index(schema.target.positive_class)
    scores = model.predict_proba(frame)[:, positive]
    now = timezone.now().isoformat()
    return [
        {
            "model": model_version.registered_model.name,
            "version": model_version.version,
            "request_id": f"{prefix}-{n}",
            "inputs": row,
            "prediction": plain(label),
            "score": round(float(score), 6),
            "predicted_at": now,
        }
        for n, (row, label, score) in enumerate(zip(rows, labels, scores, strict=True))
    ]


def ingest_as(user, payloads: list[dict]) -> list[int]:
    results = record_decisions(roles.Actor(user=user), {"decisions": payloads}, source="api")
    return [r["id"] for r in results]


def rescored_independently(model_version) -> int:
    """Every stored counterfactual of the version, re-scored here by the pipeline itself.
    Returns how many were checked."""
    model = load_model(model_version)
    schema = model_version.parsed_schema
    target = schema.target
    favourable = target.favourable_class
    positive = list(model.classes_).index(target.positive_class)
    checked = 0
    for work in CounterfactualWork.objects.filter(decision__model_version=model_version):
        decision = work.decision
        assert work.status == CounterfactualWork.DONE, (work.status, work.error)
        result = work.result
        assert result.seed == counterfactual_work.seed_for(decision.content_hash)
        assert result.config.method == "sparse-search"
        assert result.config.content["artifact_sha256"] == model_version.artifact_sha256
        for item in result.counterfactuals:
            row = dict(decision.full_inputs())
            for name, change in item["changes"].items():
                assert change["from"] == decision.full_inputs()[name]
                row[name] = change["to"]
            frame = pd.DataFrame([row])[schema.names]
            label = plain(model.predict(frame)[0])
            score = float(model.predict_proba(frame)[0, positive])
            assert str(label) == str(favourable), (decision.pk, item)
            assert str(item["prediction"]) == str(label)
            assert math.isclose(item["score"], score, abs_tol=1e-9)
            assert item["sparsity"] == len(item["changes"]) >= 1
            for feature in schema.features:
                before, after = decision.full_inputs()[feature.name], row[feature.name]
                if before == after:
                    continue
                assert not feature.protected and not feature.immutable, feature.name
                if feature.direction == "increase":
                    assert after > before, (feature.name, before, after)
                if feature.direction == "decrease":
                    assert after < before, (feature.name, before, after)
                if feature.minimum is not None:
                    assert after >= feature.minimum
                if feature.maximum is not None:
                    assert after <= feature.maximum
                if feature.step is not None:
                    anchor = feature.minimum if feature.minimum is not None else 0.0
                    units = (after - anchor) / feature.step
                    assert math.isclose(units, round(units), abs_tol=1e-6)
                if feature.type == "categorical":
                    assert after in feature.categories
            checked += 1
        quality = result.quality
        if result.counterfactuals:
            assert quality["validity"] == 1.0
            assert quality["found"] == len(result.counterfactuals) <= 3
            assert math.isclose(
                quality["mean_sparsity"],
                np.mean([c["sparsity"] for c in result.counterfactuals]),
            )
    return checked


def a_few(model_version, payloads: list[dict], adverse: int = 6, favourable: int = 3) -> list[dict]:
    """The first `adverse` adverse payloads and `favourable` others: each adverse decision
    costs its searches, and a few show what the tests check as well as many."""
    target = model_version.parsed_schema.target
    bad = [p for p in payloads if target.is_adverse(p["prediction"]) is True]
    good = [p for p in payloads if target.is_adverse(p["prediction"]) is not True]
    return bad[:adverse] + good[:favourable]


def adverse_ids(model_version, ids: list[int]) -> set[int]:
    target = model_version.parsed_schema.target
    return {
        d.pk for d in Decision.objects.filter(pk__in=ids) if target.is_adverse(d.prediction) is True
    }


# -- a real worker: the demo model, German credit, Adult ---------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.worker_queues(counterfactual_work.QUEUE)  # SHAP and LIME are not read
def test_a_real_worker_computes_counterfactuals_that_flip_when_rescored_demo_model(
    worker, model_version, ml_engineer
):
    rows = [applicant_inputs(n) for n in range(60)]
    ids = ingest_as(
        ml_engineer, a_few(model_version, real_payloads(model_version, rows, prefix="cf"))
    )
    adverse = adverse_ids(model_version, ids)
    assert len(adverse) >= 5

    # Work rows for the adverse decisions alone, written with them.
    assert set(CounterfactualWork.objects.values_list("decision_id", flat=True)) == adverse
    wait_until(
        lambda: not CounterfactualWork.objects.exclude(status=CounterfactualWork.DONE).exists(),
        "the worker to compute every adverse decision's counterfactuals",
    )
    assert rescored_independently(model_version) >= len(adverse)  # most have several
    assert "explain.counterfactuals" in worker.log.read_text()


def german_version(user):
    frame = german_credit()
    spec = german_schema()  # age and personal_status are protected
    extra = {
        "credit_history": {"immutable": True},
        "foreign_worker": {"immutable": True},
        "month": {"direction": "decrease", "min": 4, "max": 72, "step": 1},
        "credit_amount": {"direction": "decrease", "min": 250, "step": 50},
        "residence_since": {"direction": "increase", "max": 4},
    }
    for feature in spec["features"]:
        feature.update(extra.get(feature["name"], {}))
    names = GERMAN_CATEGORICAL + GERMAN_NUMERIC
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("c", OneHotEncoder(handle_unknown="ignore"), GERMAN_CATEGORICAL)],
                    remainder="passthrough",
                ),
            ),
            ("model", GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0)),
        ]
    ).fit(frame[names].iloc[:700], frame["credit"].iloc[:700])
    background = frame[names].iloc[700:900].to_csv(index=False).encode()
    version = register_model_version(
        roles.Actor(user=user),
        VersionUpload(
            name="german-credit",
            version="1",
            artifact=skops.io.dumps(model),
            artifact_format="skops",
            schema=spec,
            background=background,
            card=MODEL_CARD,
        ),
    )
    rows = [{k: plain(v) for k, v in r.items()} for r in frame[names].iloc[900:].to_dict("records")]
    return version, rows


ADULT_FEATURES = [c for c in ADULT_CATEGORICAL if c != "native-country"] + [
    "age",
    "education-num",
    "capital-gain",
    "hours-per-week",
]


def adult_version(user):
    frame = adult()
    categorical = [c for c in ADULT_CATEGORICAL if c != "native-country"]
    spec = {
        "features": [
            {
                "name": n,
                "type": "categorical",
                "categories": sorted(frame[n].unique().tolist()),
                **({"protected": True} if n in ("race", "sex") else {}),
                **({"immutable": True} if n in ("marital-status", "relationship") else {}),
            }
            for n in categorical
        ]
        + [
            {"name": "age", "type": "integer", "min": 17, "max": 90, "immutable": True},
            {"name": "education-num", "type": "integer", "min": 1, "max": 16},
            {"name": "capital-gain", "type": "integer", "min": 0, "direction": "increase"},
            {"name": "hours-per-week", "type": "integer", "min": 1, "max": 99},
        ],
        # >50K is the favourable outcome here: the positive class is the favourable one.
        "target": {
            "type": "classification",
            "classes": [0, 1],
            "positive_class": 1,
            "favourable": 1,
        },
    }
    # education (text) and education-num say the same: education is held fixed with it.
    spec["features"] = [
        {**f, "immutable": True} if f["name"] == "education" else f for f in spec["features"]
    ]
    target = (frame["income"] == ">50K").astype(int)
    train = frame[frame["split"] == "train"]
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("c", OneHotEncoder(handle_unknown="ignore"), categorical)],
                    remainder="passthrough",
                ),
            ),
            ("model", GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0)),
        ]
    ).fit(train[ADULT_FEATURES].iloc[:3000], target[train.index[:3000]])
    background = train[ADULT_FEATURES].iloc[3000:3300].to_csv(index=False).encode()
    version = register_model_version(
        roles.Actor(user=user),
        VersionUpload(
            name="adult-income",
            version="1",
            artifact=skops.io.dumps(model),
            artifact_format="skops",
            schema=spec,
            background=background,
            card=MODEL_CARD,
        ),
    )
    test = frame[frame["split"] == "test"][ADULT_FEATURES].iloc[:60]
    rows = [{k: plain(v) for k, v in r.items()} for r in test.to_dict("records")]
    return version, rows


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker_queues(counterfactual_work.QUEUE)  # SHAP and LIME are not read
@pytest.mark.database_neutral  # real models trained and searched: minutes, storage alike
@pytest.mark.parametrize("make", [german_version, adult_version], ids=["german", "adult"])
def test_a_real_worker_computes_counterfactuals_of_registered_test_models(
    worker, ml_engineer, make
):
    version, rows = make(ml_engineer)
    payloads = real_payloads(version, rows[:80], prefix=version.registered_model.name)
    ids = ingest_as(ml_engineer, a_few(version, payloads))
    adverse = adverse_ids(version, ids)
    assert len(adverse) >= 5

    wait_until(
        lambda: (
            CounterfactualWork.objects.filter(status=CounterfactualWork.DONE).count()
            == len(adverse)
        ),
        f"counterfactuals of {len(adverse)} adverse decisions",
    )
    checked = rescored_independently(version)
    assert checked >= len(adverse) // 2
    found = CounterfactualResult.objects.filter(found__gt=0).count()
    assert found >= len(adverse) // 2


@pytest.mark.django_db
@pytest.mark.database_neutral  # real models trained and explained: storage alike
@pytest.mark.parametrize(
    ("make", "edit"),
    [
        (german_version, {"credit_amount": 1500, "month": 12}),
        (adult_version, {"hours-per-week": 60}),
    ],
    ids=["german", "adult"],
)
def test_a_what_if_on_registered_test_models_is_the_models_own_answer(
    api_client, ml_engineer, make, edit
):
    """The what-if (explain/whatif.py) on German credit and Adult: its score is the loaded
    pipeline's own probability of the positive class on the edited row, and its SHAP adds
    up to the pipeline's own log-odds and equals an independent TreeExplainer's."""
    version, rows = make(ml_engineer)
    (decision_id,) = ingest_as(ml_engineer, real_payloads(version, rows[:1], prefix="what-if"))
    decision = Decision.objects.get(pk=decision_id)
    response = api_client(ml_engineer).post(
        f"/api/v1/decisions/{decision_id}/what-if", {"inputs": edit}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    schema = version.parsed_schema
    with version.artifact.open("rb") as handle:  # the artifact as registered, read here
        artifact = handle.read()
    pipeline = skops.io.loads(artifact, trusted=skops.io.get_untrusted_types(data=artifact))
    frame = pd.DataFrame([{**decision.full_inputs(), **edit}])[schema.names]
    classes = list(pipeline.classes_)
    positive = classes.index(schema.target.positive_class)
    assert body["score"] == pytest.approx(pipeline.predict_proba(frame)[0, positive], abs=1e-12)
    assert body["prediction"] == plain(pipeline.predict(frame)[0])
    assert sorted(body["changed"]) == sorted(
        name for name, value in edit.items() if decision.full_inputs()[name] != value
    )

    attributions, _ = tree_shap_by_feature(pipeline, frame, schema.names)
    sign = 1.0 if positive == 1 else -1.0  # the raw margin is for classes_[1]
    expected = {name: sign * value for name, value in attributions.items()}
    shap_body = body["explanation"]["shap"]
    for name in schema.names:
        assert shap_body["attributions"][name] == pytest.approx(expected[name], abs=1e-9)
    margin = sign * float(pipeline.decision_function(frame)[0])
    total = shap_body["base_value"] + sum(shap_body["attributions"].values())
    assert total == pytest.approx(margin, abs=1e-9)
    assert Decision.objects.count() == 1  # a what-if is never recorded


# -- in process (the task's own code, no broker): API, page, notice -----------------------------
def computed(model_version, ml_engineer, count: int = 40) -> list[Decision]:
    """Adverse decisions of the credit model with their counterfactuals computed by the
    task itself, as a worker would."""
    rows = [applicant_inputs(n) for n in range(count)]
    ids = ingest_as(ml_engineer, real_payloads(model_version, rows, prefix="api"))
    adverse = sorted(adverse_ids(model_version, ids))
    tasks.counterfactual_batch.run(model_version.pk, adverse)
    return list(Decision.objects.filter(pk__in=adverse).order_by("pk"))


@pytest.fixture
def with_counterfactuals(model_version, ml_engineer):
    return computed(model_version, ml_engineer)


def with_income_change(decisions: list[Decision]) -> Decision:
    for decision in decisions:
        for item in decision.counterfactual_work.result.counterfactuals:
            if "income" in item["changes"]:
                return decision
    raise AssertionError("no counterfactual changes the income")


@pytest.mark.django_db
def test_get_counterfactuals_shows_the_stored_result(with_counterfactuals, api_client, ml_engineer):
    decision = with_counterfactuals[0]
    response = api_client(ml_engineer).get(f"/api/v1/decisions/{decision.pk}/counterfactuals")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "done"
    assert body["policy"] == {"mode": "all", "sample_rate": 1.0}
    result = body  # the result's fields sit beside the status (API.md)
    stored = decision.counterfactual_work.result
    assert result["seed"] == stored.seed == counterfactual_work.seed_for(decision.content_hash)
    assert result["method"] == "sparse-search" and result["method_version"] == 1
    assert "scikit-learn" in result["library_versions"]
    assert result["config"]["k"] == 3
    assert result["quality"]["validity"] == 1.0
    assert 1 <= len(result["counterfactuals"]) <= 3
    for item in result["counterfactuals"]:
        assert item["sentence"].startswith("The application would have been approved if the ")
        assert item["prediction"] == "good" and item["score"] < 0.5
        assert set(item) >= {"changes", "sparsity", "distance", "plausibility", "features_changed"}
    nearest = min(result["counterfactuals"], key=lambda c: (c["distance"], c["sparsity"]))
    assert result["nearest"] == nearest["rank"]


@pytest.mark.django_db
def test_a_masked_feature_s_values_are_withheld(
    with_counterfactuals, api_client, ml_engineer, auditor
):
    """The auditor never sees personal data unmasked: income is sensitive in the demo."""
    decision = with_income_change(with_counterfactuals)
    shown = api_client(ml_engineer).get(f"/api/v1/decisions/{decision.pk}/counterfactuals")
    masked = api_client(auditor).get(f"/api/v1/decisions/{decision.pk}/counterfactuals")

    assert masked.status_code == 200
    (full,) = [c for c in shown.json()["counterfactuals"] if "income" in c["changes"]][:1]
    (hidden,) = [c for c in masked.json()["counterfactuals"] if c["rank"] == full["rank"]]
    assert hidden["changes"]["income"] == {"from": None, "to": None, "withheld": True}
    assert "the annual income had been different (value withheld)" in hidden["sentence"]
    income = decision.full_inputs()["income"]
    text = masked.content.decode()
    assert str(income) not in text and str(full["changes"]["income"]["to"]) not in text
    assert f"{full['changes']['income']['to']:,.0f}" not in hidden["sentence"]


@pytest.mark.django_db
def test_roles_a_forbidden_role_gets_403_and_a_hidden_model_404(
    with_counterfactuals, api_client, no_role, outsider
):
    decision = with_counterfactuals[0]
    url = f"/api/v1/decisions/{decision.pk}/counterfactuals"

    forbidden = api_client(no_role).get(url)
    assert forbidden.status_code == 403
    assert "counterfactuals" not in forbidden.content.decode()
    assert api_client(outsider).get(url).status_code == 404
    assert api_client(outsider).post(url).status_code == 404
    assert (
        api_client(outsider).get("/api/v1/decisions/999999999/counterfactuals").status_code == 404
    )


@pytest.mark.django_db
def test_post_recomputes_with_the_same_seed_and_is_audited(
    with_counterfactuals, api_client, ml_engineer, auditor, model_version
):
    decision = with_counterfactuals[0]
    url = f"/api/v1/decisions/{decision.pk}/counterfactuals"
    first = decision.counterfactual_work.result

    assert api_client(auditor).post(url).status_code == 403
    response = api_client(ml_engineer).post(url)
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert api_client(ml_engineer).get(url).json()["status"] == "pending"
    assert AuditEvent.objects.filter(
        action="decision.counterfactuals_requested", object_id=str(decision.pk)
    ).exists()

    tasks.counterfactual_batch.run(model_version.pk, [decision.pk])
    work = CounterfactualWork.objects.get(decision=decision)
    assert work.status == CounterfactualWork.DONE and work.result_id != first.pk
    assert work.result.requested_by == ml_engineer
    assert work.result.document == first.document  # the same seed reproduces it
    assert work.result.config_id == first.config_id  # the configuration is stored once
    result = api_client(ml_engineer).get(url).json()
    assert result["requested_by"] == ml_engineer.get_username()


@pytest.mark.django_db
def test_a_favourable_decision_needs_none(model_version, ml_engineer, api_client):
    rows = [applicant_inputs(n) for n in range(30)]
    ids = ingest_as(ml_engineer, real_payloads(model_version, rows, prefix="fav"))
    favourable = sorted(set(ids) - adverse_ids(model_version, ids))[0]
    url = f"/api/v1/decisions/{favourable}/counterfactuals"

    body = api_client(ml_engineer).get(url).json()
    assert body["status"] == "none-needed" and body["result_id"] is None
    assert body["counterfactuals"] == [] and body["method"] is None
    assert api_client(ml_engineer).post(url).status_code == 409
    assert not CounterfactualWork.objects.filter(decision_id=favourable).exists()


@pytest.mark.django_db
def test_on_demand_policy_leaves_adverse_decisions_to_be_asked_for(
    register, ml_engineer, api_client
):
    version = register(ml_engineer, explain=json.dumps({"counterfactuals": "on_demand"}))
    rows = [applicant_inputs(n) for n in range(80)]
    ids = ingest_as(ml_engineer, real_payloads(version, rows, prefix="od"))
    adverse = sorted(adverse_ids(version, ids))
    assert adverse and not CounterfactualWork.objects.exists()
    url = f"/api/v1/decisions/{adverse[0]}/counterfactuals"
    assert api_client(ml_engineer).get(url).json()["status"] == "not-requested"
    assert api_client(ml_engineer).post(url).status_code == 202
    tasks.counterfactual_batch.run(version.pk, [adverse[0]])
    assert api_client(ml_engineer).get(url).json()["status"] == "done"
    assert api_client(ml_engineer).get("/api/v1/models/credit/versions/1").json()["explain"][
        "counterfactuals"
    ] == {"mode": "on_demand", "sample_rate": 1.0}


@pytest.mark.django_db
def test_a_bad_policy_is_refused_at_registration(register, ml_engineer):
    from auditapp.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"explain\.counterfactuals"):
        register(ml_engineer, explain=json.dumps({"counterfactuals": "sometimes"}))


@pytest.mark.django_db
def test_the_sweeper_finds_decisions_still_missing_counterfactuals(model_version, ml_engineer):
    rows = [applicant_inputs(n) for n in range(30)]
    ids = ingest_as(ml_engineer, real_payloads(model_version, rows, prefix="sw"))
    adverse = adverse_ids(model_version, ids)
    long_ago = timezone.now() - timezone.timedelta(hours=1)
    CounterfactualWork.objects.update(updated_at=long_ago)  # as if the broker lost them

    assert counterfactual_work.sweep() == len(adverse)
    assert not CounterfactualWork.objects.filter(updated_at=long_ago).exists()


def test_the_sentence_uses_the_schema_s_labels_units_and_outcome_words():
    from auditapp.demo import credit
    from explain.schema import parse_schema

    schema = parse_schema(credit.SCHEMA)
    changes = {
        "loan_amount": {"from": 15000.0, "to": 12000.0},
        "income": {"from": 19210.0, "to": 27000.0},
    }
    assert sentence(schema, changes) == (
        "The application would have been approved if the annual income had been at least "
        "27,000 EUR and the loan amount at most 12,000 EUR."
    )
    assert sentence(schema, changes, masked={"income"}) == (
        "The application would have been approved if the annual income had been different "
        "(value withheld) and the loan amount at most 12,000 EUR."
    )
    three = {**changes, "has_guarantor": {"from": False, "to": True}}
    assert sentence(schema, three).endswith(
        "the loan amount at most 12,000 EUR and the answer to “Has a guarantor” had been yes."
    )


# -- the page and the notice ---------------------------------------------------------------------
@pytest.mark.django_db
def test_the_decision_page_shows_what_would_change_it(with_counterfactuals, client, ml_engineer):
    decision = with_counterfactuals[0]
    client.force_login(ml_engineer)
    page = client.get(f"/decisions/{decision.pk}/").content.decode()

    assert "What would change the decision" in page
    result = decision.counterfactual_work.result
    schema = decision.model_version.parsed_schema
    for item in result.counterfactuals:
        assert sentence(schema, item["changes"]) in page
    assert 'class="cf-changed"' in page
    assert "Validity 1.0" in page


@pytest.mark.django_db
def test_the_notice_carries_the_nearest_counterfactual(
    with_counterfactuals, model_version, compliance_officer
):
    from auditapp.reports import services as report_services
    from tests.reports.conftest import explain, pdf_text

    decision = with_counterfactuals[0]
    explain([decision.pk], model_version)
    actor = roles.Actor(user=compliance_officer)
    body = {"kind": "decision_notice", "decision_id": decision.pk, "format": "pdf"}
    report = report_services.generate_report(report_services.request_report(actor, body).pk)
    text = " ".join(pdf_text(report).split())

    items = decision.counterfactual_work.result.counterfactuals
    near = min(items, key=lambda c: (c["distance"], c["sparsity"]))
    expected = sentence(decision.model_version.parsed_schema, near["changes"])
    assert "What would have changed the decision" in text
    assert re.sub(r"\s+", " ", expected) in text


def test_seed_is_the_decision_s_own():
    assert counterfactual_work.seed_for("f" * 64) == 16**15 - 1
    assert counterfactual_work.seed_for("0123456789abcdef" * 4) == int("0123456789abcde", 16)
