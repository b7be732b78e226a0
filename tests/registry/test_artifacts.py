"""An artifact is loaded only if its bytes are the ones registered, checked before deserialising."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from auditapp.demo.credit import FEATURES
from auditapp.registry import artifacts
from auditapp.registry.artifacts import ArtifactError, ArtifactIntegrityError
from auditapp.registry.services import load_model


def tripwire(marker: str) -> None:
    """Called only if a pickle holding a Tripwire is deserialised."""
    Path(marker).write_text("deserialised")


class Tripwire:
    """Pickles into a call of `tripwire`: proof of whether deserialisation happened."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return tripwire, (self.marker,)


def overwrite_artifact(model_version, data: bytes) -> None:
    Path(model_version.artifact.path).write_bytes(data)


def test_an_untouched_artifact_loads_and_predicts(model_version, credit_frame, credit_pipeline):
    model = load_model(model_version)

    sample = credit_frame[FEATURES].head(20)
    assert list(model.predict(sample)) == list(credit_pipeline.predict(sample))


def test_changed_skops_bytes_are_refused_before_parsing(model_version):
    overwrite_artifact(model_version, b"this is not a zip file at all")

    with pytest.raises(ArtifactIntegrityError, match="changed after registration") as refused:
        load_model(model_version)

    assert model_version.artifact_sha256 in str(refused.value)
    # The same bytes without the integrity check fail differently: in the parser.
    with pytest.raises(ArtifactError, match="not a readable skops file") as parse_error:
        artifacts.load_artifact(b"this is not a zip file at all", "skops")
    assert not isinstance(parse_error.value, ArtifactIntegrityError)


def test_a_swapped_pickle_is_never_deserialised(register, ml_engineer, joblib_artifact, tmp_path):
    model_version = register(ml_engineer, artifact=joblib_artifact, artifact_format="joblib")
    marker = tmp_path / "tripwire"
    hostile = pickle.dumps(Tripwire(marker))
    overwrite_artifact(model_version, hostile)

    with pytest.raises(ArtifactIntegrityError):
        load_model(model_version)
    assert not marker.exists()

    # Control: the bytes do run code when loaded, so the check above is what stopped them.
    artifacts.load_artifact(hostile, "joblib")
    assert marker.read_text() == "deserialised"


def test_a_truncated_artifact_is_an_integrity_error(model_version, skops_artifact):
    overwrite_artifact(model_version, skops_artifact[:-100])

    with pytest.raises(ArtifactIntegrityError):
        load_model(model_version)


def test_the_same_bytes_are_loaded_once_and_other_bytes_never_take_their_place(
    model_version, skops_artifact, credit_pipeline, credit_frame
):
    """Registration, serving and explaining share one load of an artifact (by sha256); the
    integrity check still comes first, so bytes changed on disk are refused, not served
    from what was loaded before."""
    registered = load_model(model_version)
    assert load_model(model_version) is registered
    assert artifacts.load_artifact(skops_artifact, "skops") is registered

    sample = credit_frame[FEATURES].head(20)
    assert list(registered.predict_proba(sample)[:, 1]) == list(
        credit_pipeline.predict_proba(sample)[:, 1]
    )
    overwrite_artifact(model_version, skops_artifact + b"\0")
    with pytest.raises(ArtifactIntegrityError):
        load_model(model_version)
    # the same bytes under another format are loaded (and checked) as that format
    with pytest.raises(ArtifactError):
        artifacts.load_artifact(skops_artifact, "pickle")
