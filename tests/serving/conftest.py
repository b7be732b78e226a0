"""Serving fixtures: the credit model in two trained versions (different scores), a policy
put through the API, and each answer's expected value from the pipeline itself."""

from __future__ import annotations

import pytest
import skops.io

from auditapp.demo.credit import FEATURES, train_model
from auditapp.registry.services import assign_models
from auditapp.serving import warm
from tests.factories import MODEL_NAME


@pytest.fixture(scope="session")
def challenger_pipeline(credit_frame):
    """Another version of the credit model: fewer, shallower trees, so other scores."""
    pipeline = train_model(credit_frame)
    pipeline.set_params(model__n_estimators=4, model__max_depth=2)
    return pipeline.fit(credit_frame[FEATURES], credit_frame["outcome"])


@pytest.fixture(scope="session")
def challenger_artifact(challenger_pipeline) -> bytes:
    return skops.io.dumps(challenger_pipeline)


@pytest.fixture
def pipelines(credit_pipeline, challenger_pipeline):
    """The trained pipeline behind each version the `versions` fixture registers."""
    return {"1": credit_pipeline, "2": challenger_pipeline, "3": credit_pipeline}


@pytest.fixture
def versions(register, ml_engineer, domain_expert, challenger_artifact):
    """credit v1 and v3 (the same artifact) and v2 (the challenger), all in staging."""
    warm.clear()
    registered = {
        "1": register(ml_engineer),
        "2": register(ml_engineer, version="2", artifact=challenger_artifact),
        "3": register(ml_engineer, version="3"),
    }
    assign_models(domain_expert, [MODEL_NAME])
    return registered
