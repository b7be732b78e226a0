"""Every explanation row that holds a result gets it as an ExplanationResult row.

Its configuration becomes (or joins) an ExplanationConfig row, its attributions are
packed in the version's feature order, and LIME's agreement with SHAP moves from
its quality to the work row. The result's computed_at is the row's updated_at:
when it was stored (for a row that failed after an earlier success, when it failed).
Reversible: the newest result goes back into the row's columns.
"""

import orjson
from django.db import migrations

from explain import packing, records

CHUNK = 2000
COLUMNS = (
    "id",
    "decision_id",
    "decision__model_version_id",
    "method",
    "explainer",
    "library_version",
    "output_space",
    "base_value",
    "attributions",
    "top_features",
    "quality",
    "config",
    "seed",
    "duration_ms",
    "updated_at",
)


def forward(apps, schema_editor):
    Explanation = apps.get_model("explain", "Explanation")
    Result = apps.get_model("explain", "ExplanationResult")
    versions = _Versions(apps)
    configs = _Configs(apps, versions)
    rows = Explanation.objects.filter(attributions__isnull=False).order_by("id").values(*COLUMNS)
    chunk: list[dict] = []
    for row in rows.iterator(CHUNK):
        chunk.append(row)
        if len(chunk) == CHUNK:
            _migrate(schema_editor.connection, Explanation, Result, versions, configs, chunk)
            chunk = []
    _migrate(schema_editor.connection, Explanation, Result, versions, configs, chunk)


def _migrate(connection, Explanation, Result, versions, configs, rows):
    if not rows:
        return
    results, agreements = [], []
    for row in rows:
        version_id = row["decision__model_version_id"]
        quality = dict(row["quality"] or {})
        agreements.append(quality.pop("agreement_with_shap", None))
        try:
            packed = packing.pack(row["attributions"], versions.names(version_id))
        except ValueError as exc:
            raise RuntimeError(f"explanation {row['id']}: {exc}") from exc
        results.append(
            Result(
                decision_id=row["decision_id"],
                config_id=configs.id_of(version_id, row),
                base_value=row["base_value"],
                attributions=packed,
                top_features=(row["top_features"] or [])[: records.STORED_TOP],
                quality=quality,
                seed=row["seed"],
                duration_ms=row["duration_ms"],
                computed_at=row["updated_at"],
            )
        )
    Result.objects.bulk_create(results)
    pointers = [
        {"id": row["id"], "result_id": result.pk, "agreement": agreement}
        for row, result, agreement in zip(rows, results, agreements, strict=True)
    ]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Explanation._meta.db_table} AS e "
                "SET result_id = v.result_id, agreement = v.agreement "
                "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, result_id bigint, agreement jsonb) "
                "WHERE e.id = v.id",
                [orjson.dumps(pointers).decode()],
            )
    else:
        Explanation.objects.bulk_update(
            [Explanation(**pointer) for pointer in pointers], ["result_id", "agreement"], 500
        )


class _Versions:
    def __init__(self, apps):
        self.ModelVersion = apps.get_model("registry", "ModelVersion")
        self.known = {}

    def get(self, version_id):
        if version_id not in self.known:
            self.known[version_id] = self.ModelVersion.objects.get(pk=version_id)
        return self.known[version_id]

    def names(self, version_id) -> list[str]:
        return [feature["name"] for feature in self.get(version_id).schema["features"]]


class _Configs:
    def __init__(self, apps, versions):
        self.Config = apps.get_model("explain", "ExplanationConfig")
        self.versions = versions
        self.ids = {}

    def id_of(self, version_id, row) -> int:
        config = row["config"] or {}
        parts = (row["method"], row["explainer"], row["library_version"], row["output_space"])
        digest = records.config_digest(*parts, config)
        key = (version_id, row["method"], digest)
        if key not in self.ids:
            version = self.versions.get(version_id)
            content, version_hashes = records.stripped_config(
                config, version.artifact_sha256, version.background_sha256
            )
            self.ids[key] = self.Config.objects.get_or_create(
                model_version_id=version_id,
                method=row["method"],
                digest=digest,
                defaults={
                    "explainer": row["explainer"],
                    "library_version": row["library_version"],
                    "output_space": row["output_space"],
                    "content": content,
                    "version_hashes": version_hashes,
                },
            )[0].pk
        return self.ids[key]


def backward(apps, schema_editor):
    """The newest result of each row back into its columns (the result rows are dropped next)."""
    Explanation = apps.get_model("explain", "Explanation")
    versions = _Versions(apps)
    rows = Explanation.objects.filter(result__isnull=False).select_related("result__config")
    changed = []
    for explanation in rows.iterator(CHUNK):
        result, config = explanation.result, explanation.result.config
        version = versions.get(config.model_version_id)
        explanation.explainer = config.explainer
        explanation.library_version = config.library_version
        explanation.output_space = config.output_space
        explanation.config = records.full_config(
            config.content, config.version_hashes, version.artifact_sha256, version.background_sha256
        )
        explanation.base_value = result.base_value
        explanation.attributions = packing.unpack(result.attributions, versions.names(version.pk))
        explanation.top_features = records.ranked(explanation.attributions)
        explanation.quality = records.with_agreement(result.quality, explanation.agreement)
        explanation.seed = result.seed
        explanation.duration_ms = result.duration_ms
        changed.append(explanation)
    fields = [
        *("explainer", "library_version", "output_space", "config", "base_value"),
        *("attributions", "top_features", "quality", "seed", "duration_ms"),
    ]
    Explanation.objects.bulk_update(changed, fields, 500)


class Migration(migrations.Migration):
    dependencies = [
        ("explain", "0003_results"),
    ]

    operations = [migrations.RunPython(forward, backward)]
