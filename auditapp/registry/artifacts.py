"""Loading model artifacts safely, and checking that a model fits its schema.

An artifact is never deserialised before its sha256 matches the one recorded
at registration. A skops file is audited first: every type it names beyond
skops' own defaults must be on an exact allowlist of classes, because skops
calls what a file names (a function named there runs with the file's
arguments). joblib artifacts are pickles and are accepted only from trusted
roles, for models they are assigned to (services.py checks both before
loading; accounts/roles.py: upload_joblib). No Django here.

skops, joblib and scikit-learn (three seconds to import) are imported by the
functions that read an artifact, not by the module: the site's URLs and every
`manage.py` command reach this module, and most never load a model.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd

from explain.schema import Schema

FORMATS = ("skops", "joblib")

# Beyond scikit-learn's public estimators (trusted_types() adds them), the exact
# types that skops reports for fitted models of the kinds we support, found by
# dumping each kind and reading skops.io.get_untrusted_types; each with the skops
# loader(s) that build it in such a file. Classes only, and never a prefix:
# "numpy." also matched numpy.testing's runstring, which execs a string. The
# loader matters because some loaders call the named class with arguments from
# the file (xgboost's Booster(model_file=...) reads a path); these never do.
# Not here on purpose: sparse matrices (skops builds them without checking their
# indices, which scipy's C++ code then trusts), HistGradientBoosting's
# TreePredictor (the same), functions such as SelectKBest's f_classif. Such
# models can be registered as joblib by an ML engineer assigned to the model.
OBJECT = "ObjectNode"  # cls.__new__(cls), then the saved state: the class is never called
TRUSTED_INTERNAL_TYPES: dict[str, frozenset[str]] = {
    # DecisionTree*, RandomForest*, ExtraTrees*, GradientBoosting*, AdaBoost*, Bagging*
    "sklearn.tree._tree.Tree": frozenset({"TreeNode"}),
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer": frozenset({OBJECT}),  # MLP*
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer": frozenset({OBJECT}),
    "sklearn.calibration._CalibratedClassifier": frozenset({OBJECT}),  # CalibratedClassifierCV
    "sklearn.calibration._SigmoidCalibration": frozenset({OBJECT}),
    "sklearn.utils._bunch.Bunch": frozenset({"DictNode"}),  # Voting*, Stacking*
    "numpy.dtype": frozenset({"DTypeNode"}),  # SimpleImputer, KBinsDiscretizer
    "xgboost.sklearn.XGBClassifier": frozenset({OBJECT}),
    "xgboost.sklearn.XGBRegressor": frozenset({OBJECT}),
    "xgboost.core.Booster": frozenset({OBJECT}),
    "lightgbm.sklearn.LGBMClassifier": frozenset({OBJECT}),
    "lightgbm.sklearn.LGBMRegressor": frozenset({OBJECT}),
    "lightgbm.basic.Booster": frozenset({OBJECT}),
    "collections.OrderedDict": frozenset({"TypeNode", "DictNode"}),  # LightGBM's parameters
}
MAX_NAMED_TYPES = 20  # an error names at most this many refused types


class ArtifactError(ValueError):
    """The artifact cannot be used; the message says why."""


class ArtifactIntegrityError(ArtifactError):
    """The artifact's bytes are not the ones registered."""


class UntrustedTypesError(ArtifactError):
    """A skops file names types that are not on the allowlist (`types`, sorted)."""

    def __init__(self, message: str, types: list[str]):
        super().__init__(message)
        self.types = types


def type_name(cls: type) -> str:
    """A class's name as skops reports it: module and class."""
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.cache
def trusted_types() -> dict[str, frozenset[str]]:
    """The allowlist, type name -> loaders: scikit-learn's public estimator classes
    (as objects) and TRUSTED_INTERNAL_TYPES.

    Computed once per process from the installed scikit-learn, as skops computes
    its defaults, so that the classes' module paths are current.
    """
    from sklearn.utils import all_estimators  # seconds to import: see the module's docstring

    estimators = {type_name(cls) for _, cls in all_estimators() if isinstance(cls, type)}
    return {name: frozenset({OBJECT}) for name in estimators} | TRUSTED_INTERNAL_TYPES


LOADED_CACHE_SIZE = 8  # models kept by load_artifact, as explain.explainers keeps contexts
_loaded: OrderedDict[tuple[str, str], Any] = OrderedDict()


def _nodes(data: bytes):
    """(loader, type name) of every node in a skops file's schema.json."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        stack = [json.loads(archive.read("schema.json"))]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item:
                yield item["__loader__"], f"{item.get('__module__')}.{item.get('__class__')}"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def trusted_skops_types(data: bytes) -> list[str]:
    """The non-default types in a skops file, if all are on our allowlist, each
    built by a loader the allowlist names for it.

    Only the file's schema is read: nothing is imported or called before this passes.
    """
    import skops.io  # seconds to import: see the module's docstring

    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:
        raise ArtifactError(f"the artifact is not a readable skops file ({exc})") from exc
    allowed = trusted_types()
    refused = {name for name in untrusted if name not in allowed}
    refused |= {
        f"{name} (as {loader})"
        for loader, name in _nodes(data)
        if name in untrusted and name in allowed and loader not in allowed[name]
    }
    refused = sorted(refused)
    if refused:
        named = refused[:MAX_NAMED_TYPES]
        more = f" and {len(refused) - len(named)} more" if len(refused) > len(named) else ""
        raise UntrustedTypesError(
            f"the skops artifact contains types that are not trusted: {named}{more}; "
            "only scikit-learn estimators and the NumPy, XGBoost and LightGBM classes "
            "they keep are accepted (a model that needs more can be registered as joblib "
            "by an ML engineer assigned to it)",
            types=named,
        )
    return untrusted


def load_artifact(data: bytes, artifact_format: str, expected_sha256: str | None = None) -> Any:
    """Deserialise an artifact after checking its sha256 (when one was recorded).

    The same bytes give the same model: the last LOADED_CACHE_SIZE artifacts this process
    audited and loaded are kept by sha256, so registering a version, then serving and
    explaining it (or several versions of one artifact) load it once. Callers only read
    the model (predict, explain), as the explainers' cache already shares it."""
    digest = sha256_hex(data)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ArtifactIntegrityError(
            f"the artifact's sha256 is {digest}, not the registered {expected_sha256}; "
            "it was changed after registration and will not be loaded"
        )
    key = (digest, artifact_format)
    if key in _loaded:
        _loaded.move_to_end(key)
        return _loaded[key]
    model = _deserialise(data, artifact_format)
    _loaded[key] = model
    while len(_loaded) > LOADED_CACHE_SIZE:
        _loaded.popitem(last=False)
    return model


def _deserialise(data: bytes, artifact_format: str) -> Any:
    if artifact_format == "skops":
        trusted = trusted_skops_types(data)
        import skops.io

        try:
            return skops.io.loads(data, trusted=trusted)
        except Exception as exc:
            raise ArtifactError(f"the skops artifact could not be loaded ({exc})") from exc
    if artifact_format == "joblib":
        import joblib

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
