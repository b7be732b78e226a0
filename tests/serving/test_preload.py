"""A web process loads the versions that answer as it starts (ATTEST_SERVING_PRELOAD): the
first predict after a deploy does not pay the cold load, and what cannot load is logged
without stopping the process."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from auditapp.serving import warm
from explain import explainers
from tests.serving.helpers import expected, instance, predict_url, put_policy
from tests.workers import database_url, python_json


def a_new_process() -> None:
    warm.clear()
    explainers._contexts.clear()


@pytest.mark.django_db
def test_the_answering_versions_are_loaded_before_the_first_predict(
    api_client, admin, ml_engineer, versions, pipelines
):
    put_policy(
        api_client(admin), production="1", canary={"version": "2", "share": 0.5}, shadow=["3"]
    )
    a_new_process()

    assert warm.preload() == ["credit v1", "credit v2"]  # the shadow scores in the workers
    model_id = versions["1"].registered_model_id
    assert warm.warm_versions(model_id) == [versions["1"].pk, versions["2"].pk]

    # Their files gone, both arms still answer: nothing was left to load at the request.
    for number in ("1", "2"):
        artifact = versions[number].artifact
        artifact.storage.delete(artifact.name)
    client = api_client(ml_engineer)
    arms = set()
    for n in range(12):
        response = client.post(predict_url(), instance(n), format="json")
        assert response.status_code == 200, response.content[:300]
        answer = response.json()
        version = answer["version"]
        assert (answer["prediction"], pytest.approx(answer["score"])) == expected(
            pipelines[version], instance(n)["inputs"]
        )
        arms.add(version)
    assert arms == {"1", "2"}


@pytest.mark.django_db
def test_a_version_that_cannot_load_is_logged_and_the_others_are_loaded(
    api_client, admin, versions, caplog
):
    put_policy(api_client(admin), production="1", canary={"version": "2", "share": 0.1})
    broken = versions["2"].artifact
    broken.storage.delete(broken.name)
    a_new_process()

    assert warm.preload() == ["credit v1"]

    (failure,) = [r for r in caplog.records if r.msg.startswith("serving.preload_failed")]
    assert "credit version 2 cannot be loaded" in failure.getMessage()
    assert "serving.preloaded versions=credit v1" in caplog.text


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("preload", ["1", "0"])
def test_the_wsgi_application_preloads_as_the_process_starts(api_client, admin, versions, preload):
    put_policy(api_client(admin), production="2")
    script = (
        "import json\n"
        "from django.db import connection\n"
        "import auditapp.wsgi\n"
        "from auditapp.serving import warm\n"
        f"print(json.dumps([warm.warm_versions({versions['2'].registered_model_id}), "
        "connection.connection is None]))\n"
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "DJANGO_SETTINGS_MODULE": "auditapp.test_settings",
        "ATTEST_SERVING_PRELOAD": preload,
    }
    warm_ids, closed = python_json(script, env)
    assert warm_ids == ([versions["2"].pk] if preload == "1" else [])
    assert closed  # no connection left for a forked worker to share
