"""The registry's rows in the sealed log: each model version and each stage change.

A version's record covers what decided (artifact and schema hashes, the schema
itself with its sensitive flags, background, card, explanation settings) and
its stage, recorded again at every stage change.
"""

from auditapp.accounts.records import RecordKind, register
from auditapp.registry.models import ModelVersion, StageChange

MODEL_VERSION = register(
    RecordKind(
        name="model_version",
        label="Model version",
        model=ModelVersion,
        fields=(
            "registered_model__name",
            "version",
            "stage",
            "artifact_format",
            "artifact_sha256",
            "schema",
            "schema_sha256",
            "background_sha256",
            "background_rows",
            "description",
            "intended_use",
            "limitations",
            "training_data",
            "metrics",
            "lime_mode",
            "lime_sample_rate",
            "explain_settings",
            "self_test",
            "created_by_id",
            "created_at",
        ),
        time_field="created_at",
        stateful=True,
    )
)

STAGE_CHANGE = register(
    RecordKind(
        name="stage_change",
        label="Stage change",
        model=StageChange,
        fields=("model_version_id", "from_stage", "to_stage", "changed_by_id", "changed_at"),
        time_field="changed_at",
    )
)
