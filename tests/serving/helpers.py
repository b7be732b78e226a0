"""What serving tests send and expect."""

from __future__ import annotations

import pandas as pd

from auditapp.demo.credit import FEATURES
from tests.factories import MODEL_NAME, applicant_inputs


def expected(pipeline, inputs: dict) -> tuple[str, float]:
    """The pipeline's own prediction and probability of "bad" (the positive class)."""
    frame = pd.DataFrame([{name: inputs[name] for name in FEATURES}])
    positive = list(pipeline.classes_).index("bad")
    return str(pipeline.predict(frame)[0]), float(pipeline.predict_proba(frame)[0, positive])


def instance(n: int, **extra) -> dict:
    return {"inputs": applicant_inputs(n), "request_id": f"req-{n:06d}", **extra}


def predict_url(name: str = MODEL_NAME) -> str:
    return f"/api/v1/models/{name}/predict"


def traffic_url(name: str = MODEL_NAME) -> str:
    return f"/api/v1/models/{name}/traffic"


def put_policy(client, **document):
    response = client.put(traffic_url(), {"shadow": [], **document}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()
