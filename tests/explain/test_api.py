"""POST /api/v1/decisions/{id}/explain: recompute now, on the priority queue, with a new seed."""

from __future__ import annotations

import pytest
from amqp.exceptions import ChannelError

from auditapp.accounts.models import AuditEvent
from auditapp.celery import app as celery_app
from explain import batches, publishing
from explain.models import Explanation


def queued(queue: str) -> int:
    with celery_app.connection_for_write() as connection:
        try:
            return connection.default_channel.queue_declare(queue, passive=True).message_count
        except ChannelError:  # Redis: a queue nothing was ever sent to does not exist
            return 0


@pytest.fixture
def explained(decision, model_version):
    batches.run_batch(model_version.pk, "lime", [decision.pk])
    return Explanation.objects.get(decision=decision, method="lime")


def test_it_requeues_explanations_on_the_priority_queue_with_a_new_seed(
    api_client, compliance_officer, decision, explained, django_capture_on_commit_callbacks
):
    publishing.wait_until_published()  # the ingestion's own batches, sent by the publisher thread
    celery_app.control.purge()
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client(compliance_officer).post(
            f"/api/v1/decisions/{decision.pk}/explain", {"methods": ["lime"]}, format="json"
        )

    assert response.status_code == 202
    assert response.json()["queued"] == ["lime"]
    explained.refresh_from_db()
    assert (explained.status, explained.attempts) == (Explanation.PENDING, 0)
    assert queued("explain-priority") == 1
    assert queued("explain-lime") == 0
    assert AuditEvent.objects.filter(action="decision.explain_requested").count() == 1

    old_seed = explained.seed
    batches.run_batch(decision.model_version_id, "lime", [decision.pk], new_seed=True)
    explained.refresh_from_db()
    assert explained.status == Explanation.DONE and explained.seed != old_seed
    celery_app.control.purge()


def test_it_refuses_unknown_methods(api_client, compliance_officer, decision):
    response = api_client(compliance_officer).post(
        f"/api/v1/decisions/{decision.pk}/explain", {"methods": ["magic"]}, format="json"
    )
    assert response.status_code == 400
    assert "methods" in response.json()["error"]["message"]


def test_the_decision_shows_explanations_with_their_quality(
    api_client, compliance_officer, decision, explained, model_version
):
    batches.run_batch(model_version.pk, "shap", [decision.pk])

    body = api_client(compliance_officer).get(f"/api/v1/decisions/{decision.pk}").json()

    shap_part, lime_part = body["explanations"]["shap"], body["explanations"]["lime"]
    assert shap_part["status"] == "done" and shap_part["explainer"] == "TreeExplainer"
    assert set(shap_part["attributions"]) == set(model_version.parsed_schema.names)
    assert shap_part["quality"]["additivity_ok"] is True
    assert shap_part["library_version"].startswith("shap ")
    assert "agreement_with_shap" in lime_part["quality"]
    assert lime_part["seed"] == explained.seed
