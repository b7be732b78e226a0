"""A credit model under four-eyes (the test settings register models with it off)."""

from __future__ import annotations

import pytest

from auditapp.accounts import roles
from auditapp.accounts.services import create_user
from auditapp.registry.models import RegisteredModel
from auditapp.registry.services import assign_models, set_four_eyes
from tests.conftest import PASSWORD
from tests.factories import MODEL_NAME


@pytest.fixture
def second_engineer(role_groups):
    """Another ML engineer assigned to the credit model: the second pair of eyes."""
    return create_user("ml_engineer_2", roles.ML_ENGINEER, password=PASSWORD)


@pytest.fixture
def gated_version(model_version, ml_engineer, second_engineer):
    """credit v1 (staging), four-eyes on (turning it on needs no approval)."""
    assign_models(second_engineer, [MODEL_NAME])
    model = RegisteredModel.objects.get(name=MODEL_NAME)
    assert set_four_eyes(roles.Actor(user=ml_engineer), model, True).four_eyes is True
    model_version.refresh_from_db()
    return model_version
