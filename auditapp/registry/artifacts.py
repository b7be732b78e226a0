"""Loading model artifacts safely, and checking that a model fits its schema.

An artifact is never deserialised before its sha256 matches the one recorded
at registration. skops artifacts are loaded with an explicit list of trusted
types; joblib artifacts are pickles and are accepted only from trusted roles
(see accounts/roles.py: upload_joblib). No Django here.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import joblib
import numpy as np
import pandas as pd
import skops.io

from auditapp.registry.schema import Schema

FORMATS = ("skops", "joblib")
# Types outside skops' own default list that we accept in an artifact: the
# internals of scikit-learn, NumPy/SciPy and the gradient-boosting libraries.
TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "xgboost.", "lightgbm.")
TRUSTED_TYPES = frozenset({"collections.OrderedDict"})  # plain containers LightGBM keeps


class ArtifactError(ValueError):
    """The artifact cannot be used; the message says why."""


class ArtifactIntegrityError(ArtifactError):
    """The artifact's bytes are not the ones registered."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def trusted_skops_types(data: bytes) -> list[str]:
    """The non-default types in a skops file, if all are on our allowlist."""
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:
        raise ArtifactError(f"the artifact is not a readable skops file ({exc})") from exc
    refused = [
        name
        for name in untrusted
        if not name.startswith(TRUSTED_TYPE_PREFIXES) and name not in TRUSTED_TYPES
    ]
    if refused:
        raise ArtifactError(
            f"the skops artifact contains types that are not trusted: {refused}; "
            "only scikit-learn, NumPy, SciPy, XGBoost and LightGBM types are accepted"
        )
    return untrusted


def load_artifact(data: bytes, artifact_format: str, expected_sha256: str | None = None) -> Any:
    """Deserialise an artifact after checking its sha256 (when one was recorded)."""
    if expected_sha256 is not None and sha256_hex(data) != expected_sha256:
        raise ArtifactIntegrityError(
            f"the artifact's sha256 is {sha256_hex(data)}, not the registered {expected_sha256}; "
            "it was changed after registration and will not be loaded"
        )
    if artifact_format == "skops":
        trusted = trusted_skops_types(data)
        try:
            return skops.io.loads(data, trusted=trusted)
        except Exception as exc:
            raise ArtifactError(f"the skops artifact could not be loaded ({exc})") from exc
    if artifact_format == "joblib":
        try:
            return joblib.load(io.BytesIO(data))  # trusted roles only; sha256 checked
        except Exception as exc:
            raise ArtifactError(f"the joblib artifact could not be loaded ({exc})") from exc
    raise ArtifactError(f"artifact_format must be one of {list(FORMATS)}, got {artifact_format!r}")


def _as_labels(values) -> list[str]:
    return [str(v) for v in values]


def check_model_fits_schema(model: Any, schema: Schema, frame: pd.DataFrame) -> None:
    """Raise ArtifactError unless the model predicts on `frame` as the schema says."""
    expected = getattr(model, "feature_names_in_", None)
    if expected is not None:
        expected = [str(name) for name in expected]
        missing = [n for n in expected if n not in schema.names]
        extra = [n for n in schema.names if n not in expected]
        if missing or extra:
            raise ArtifactError(
                "the schema does not match the features the model was trained on: "
                + "; ".join(
                    part
                    for part in (
                        f"the model expects {missing} which the schema lacks" if missing else "",
                        f"the schema has {extra} which the model does not use" if extra else "",
                    )
                    if part
                )
            )
        frame = frame[expected]
    if not hasattr(model, "predict"):
        raise ArtifactError(f"the artifact is a {type(model).__name__}, which has no predict()")
    try:
        predictions = np.asarray(model.predict(frame))
    except Exception as exc:
        raise ArtifactError(
            f"the model failed to predict on the background sample with the schema's columns "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if len(predictions) != len(frame):
        raise ArtifactError("the model returned a different number of predictions than rows")
    if schema.target.type == "classification":
        _check_classifier(model, schema, frame)
    elif not np.issubdtype(predictions.dtype, np.number):
        raise ArtifactError("the schema says regression but the model predicts non-numbers")


def _check_classifier(model: Any, schema: Schema, frame: pd.DataFrame) -> None:
    classes = getattr(model, "classes_", None)
    if classes is None or not hasattr(model, "predict_proba"):
        raise ArtifactError(
            "the schema says classification but the model has no classes_ / predict_proba()"
        )
    if sorted(_as_labels(classes)) != sorted(_as_labels(schema.target.classes)):
        raise ArtifactError(
            f"the model's classes {_as_labels(classes)} differ from the schema's "
            f"{_as_labels(schema.target.classes)}"
        )
    try:
        model.predict_proba(frame.iloc[:5])
    except Exception as exc:
        raise ArtifactError(f"predict_proba failed ({type(exc).__name__}: {exc})") from exc


def probe_rows(schema: Schema) -> list[dict]:
    """A few synthetic rows within the schema, to test a model that came without background."""
    rows = []
    for i in range(3):
        row = {}
        for feature in schema.features:
            if feature.type == "categorical":
                row[feature.name] = feature.categories[i % len(feature.categories)]
            elif feature.type == "boolean":
                row[feature.name] = bool(i % 2)
            else:
                low = feature.minimum if feature.minimum is not None else 0.0
                high = feature.maximum if feature.maximum is not None else low + 10.0
                value = low + (high - low) * (i + 1) / 4
                row[feature.name] = round(value) if feature.type == "integer" else value
        rows.append(row)
    return rows
