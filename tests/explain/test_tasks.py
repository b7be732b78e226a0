"""Explanation tasks called the way a worker calls them, against the real database."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import shap
import skops.io
from django.utils import timezone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from auditapp.decisions.models import Decision
from auditapp.demo.credit import CATEGORICAL, FEATURES, applicants
from explain import batches, claims, explainers, leases, publishing, tasks
from explain.models import Explanation
from tests.factories import DecisionPayloadFactory


@pytest.fixture
def decisions(model_version, ingest) -> list[Decision]:
    results = ingest(*DecisionPayloadFactory.build_batch(12))
    return list(Decision.objects.filter(pk__in=[r["id"] for r in results]).order_by("pk"))


def ids(decisions) -> list[int]:
    return [d.pk for d in decisions]


def test_task_names_are_a_wire_contract():
    assert tasks.explain_batch.name == "explain.batch"
    assert tasks.sweep_pending.name == "explain.sweep"
    assert tasks.explain_batch.acks_late and tasks.explain_batch.reject_on_worker_lost
    assert tasks.explain_batch.soft_time_limit < tasks.explain_batch.time_limit < 3600


def test_a_shap_batch_stores_attributions_equal_to_shap_for_every_decision(
    decisions, model_version, credit_pipeline
):
    outcome = tasks.explain_batch.run(model_version.pk, "shap", ids(decisions))

    assert outcome == {"explained": 12, "failed": 0}
    stored = Explanation.objects.filter(method="shap", decision__in=decisions).order_by(
        "decision_id"
    )
    prep, estimator = credit_pipeline[:-1], credit_pipeline[-1]
    schema = model_version.parsed_schema
    frame = schema.frame([d.full_inputs() for d in decisions])
    reference = np.asarray(shap.TreeExplainer(estimator).shap_values(prep.transform(frame)))
    # "bad" is classes_[0]: shap's margin is for "good", so the signs flip.
    names_out = list(prep.get_feature_names_out())
    for row, explanation in enumerate(stored):
        assert explanation.status == Explanation.DONE
        assert explanation.attempts == 1
        assert explanation.explainer == "TreeExplainer"
        assert explanation.output_space == "log_odds"
        assert explanation.quality["additivity_ok"] is True
        for feature in schema.names:
            columns = [
                j
                for j, name in enumerate(names_out)
                if name.split("__", 1)[1] == feature
                or (
                    name.split("__", 1)[1].startswith(feature + "_")
                    and name.startswith("categorical__")
                )
            ]
            expected = -reference[row, columns].sum()
            assert explanation.attributions[feature] == pytest.approx(expected, abs=1e-9)


def test_running_a_batch_twice_explains_each_decision_once(decisions, model_version):
    tasks.explain_batch.run(model_version.pk, "shap", ids(decisions))
    again = tasks.explain_batch.run(model_version.pk, "shap", ids(decisions))

    assert again == {"explained": 0, "failed": 0}
    assert Explanation.objects.filter(method="shap", attempts=1, status="done").count() == 12


def test_lime_gets_agreement_with_shap_whichever_finishes_last(decisions, model_version):
    first = ids(decisions)[:2]
    batches.run_batch(model_version.pk, "lime", first)
    batches.run_batch(model_version.pk, "shap", first)

    for lime in Explanation.objects.filter(method="lime", decision_id__in=first):
        assert lime.status == Explanation.DONE
        assert lime.seed == batches.default_seed(lime.decision.content_hash)
        assert 0 <= lime.quality["fidelity_r2"] <= 1
        agreement = lime.quality["agreement_with_shap"]
        assert 0 <= agreement["top_k_overlap"] <= 1


def test_one_bad_row_fails_alone_with_its_reason(register, ml_engineer, ingest):
    # A model whose encoder refuses categories it never saw, though the schema
    # allows them: decisions with such a value are recorded but cannot be explained.
    frame = applicants(400, seed=5)
    seen = frame[frame["loan_purpose"] != "business"]
    strict = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("categorical", OneHotEncoder(handle_unknown="error"), CATEGORICAL)],
                    remainder="passthrough",
                ),
            ),
            ("model", GradientBoostingClassifier(n_estimators=5, random_state=0)),
        ]
    ).fit(seen[FEATURES], seen["outcome"])
    version = register(
        ml_engineer,
        name="strict",
        artifact=skops.io.dumps(strict),
        background=seen[FEATURES].head(40).to_csv(index=False).encode(),
    )
    payloads = DecisionPayloadFactory.build_batch(5, model="strict")
    for payload in payloads:
        payload["inputs"]["loan_purpose"] = "car"
    payloads[2]["inputs"]["loan_purpose"] = "business"
    results = ingest(*payloads)

    batches.run_batch(version.pk, "shap", [r["id"] for r in results])

    statuses = [Explanation.objects.get(decision_id=r["id"], method="shap").status for r in results]
    assert statuses == ["done", "done", "failed", "done", "done"]
    failed = Explanation.objects.get(decision_id=results[2]["id"], method="shap")
    assert "business" in failed.error


def test_a_model_that_cannot_be_loaded_fails_every_row_with_the_reason(decisions, model_version):
    with model_version.artifact.open("r+b") as handle:
        handle.seek(0)
        handle.write(b"tampered")
    explainers._contexts.clear()

    outcome = batches.run_batch(model_version.pk, "shap", ids(decisions))

    assert outcome == {"explained": 0, "failed": 12}
    errors = set(Explanation.objects.filter(method="shap").values_list("error", flat=True))
    assert len(errors) == 1 and "sha256" in errors.pop()


def test_attempts_are_counted_and_capped(decisions, model_version):
    Explanation.objects.filter(decision__in=decisions, method="shap").update(
        attempts=claims.MAX_ATTEMPTS
    )

    batches.run_batch(model_version.pk, "shap", ids(decisions))

    rows = Explanation.objects.filter(decision__in=decisions, method="shap")
    assert {r.status for r in rows} == {Explanation.FAILED}
    assert {r.error for r in rows} == {f"gave up after {claims.MAX_ATTEMPTS} attempts"}


def test_the_sweeper_resends_only_what_is_stale(decisions, model_version):
    now = timezone.now()
    assert leases.sweep(now=now) == 0  # just ingested: within the grace period

    later = now + leases.PENDING_GRACE + timedelta(seconds=1)
    resent = leases.sweep(now=later)

    assert resent == 24  # 12 decisions x (shap + lime)
    # Touched, so the next sweep a minute later leaves them alone.
    assert leases.sweep(now=later + timedelta(minutes=1)) == 0


def test_explanations_are_reproduced_from_their_record(decisions, model_version):
    chosen = ids(decisions)[:2]
    batches.run_batch(model_version.pk, "lime", chosen)
    stored = {e.decision_id: e.attributions for e in Explanation.objects.filter(method="lime")}

    explainers._contexts.clear()  # a fresh worker process
    Explanation.objects.filter(method="lime").update(status=Explanation.PENDING)
    batches.run_batch(model_version.pk, "lime", chosen)

    again = {e.decision_id: e.attributions for e in Explanation.objects.filter(method="lime")}
    assert again == stored


def test_a_batch_opens_every_review_case_it_finds_each_with_its_opening_event(
    decisions, model_version, settings
):
    from auditapp.reviews.models import CaseEvent, ReviewCase

    settings.ATTEST_REVIEW_THRESHOLD, settings.ATTEST_REVIEW_SCORE_BAND = 0.5, 1.0  # all near

    batches.run_batch(model_version.pk, "shap", ids(decisions))

    cases = list(ReviewCase.objects.filter(decision__in=decisions))
    assert sorted(c.decision_id for c in cases) == ids(decisions)
    # The factory's scores are not the model's own, so most cases also name that; and the
    # demo schema's protected inputs are among some declined decisions' main reasons.
    assert all(
        {r["rule"] for r in c.reasons}
        <= {"score_near_threshold", "score_not_the_models", "protected_reason"}
        and "score_near_threshold" in {r["rule"] for r in c.reasons}
        for c in cases
    )
    opened = CaseEvent.objects.filter(case__in=cases, action="opened")
    assert sorted(e.case_id for e in opened) == sorted(c.pk for c in cases)
    assert all(e.details["reasons"] == e.case.reasons for e in opened)


def taken_from(queue: str) -> list[tuple]:
    """Take every task message off a broker queue: their args."""
    from auditapp.celery import app as celery_app

    found = []
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            args, _kwargs, _embed = message.decode()
            found.append(tuple(args))
    return found


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_model_agnostic_batch_explains_one_small_batch_and_sends_the_rest_on(
    register, ml_engineer, ingest, monkeypatch
):
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    frame = applicants(300, seed=6)
    mlp = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)],
                    remainder=StandardScaler(),
                ),
            ),
            ("model", MLPClassifier((8,), max_iter=200, random_state=0)),
        ]
    ).fit(frame[FEATURES], frame["outcome"])
    version = register(
        ml_engineer,
        name="mlp",
        artifact=skops.io.dumps(mlp),
        background=frame[FEATURES].head(20).to_csv(index=False).encode(),
    )
    # Three rows a task, not ten: the split is the same with fewer rows to explain.
    monkeypatch.setattr(batches, "PER_ROW_BATCH", 3)
    n = batches.PER_ROW_BATCH
    results = ingest(*DecisionPayloadFactory.build_batch(2 * n + 3, model="mlp"))
    decision_ids = [r["id"] for r in results]
    publishing.wait_until_published()
    taken_from(publishing.PER_ROW_QUEUE)  # whatever ingestion queued there

    outcome = batches.run_batch(version.pk, "shap", decision_ids)

    assert outcome == {"explained": n, "failed": 0, "split": n + 3}
    done = Explanation.objects.filter(method="shap", status=Explanation.DONE)
    assert sorted(done.values_list("decision_id", flat=True)) == decision_ids[:n]
    assert {e.explainer for e in done} == {"PermutationExplainer"}
    # (the filesystem broker does not keep a queue's order)
    assert sorted(taken_from(publishing.PER_ROW_QUEUE)) == [
        (version.pk, "shap", decision_ids[n : 2 * n]),
        (version.pk, "shap", decision_ids[2 * n :]),
    ]
