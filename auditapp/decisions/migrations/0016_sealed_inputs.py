"""Encryption at rest of sensitive inputs: the sealed blob, its blind index, and the one
UPDATE for re-encryption the decisions table lets through (README: Encryption at rest).

Both columns are nullable without a default: on PostgreSQL, ALTER TABLE on the
partitioned parent adds them to every partition without rewriting a row; decisions
recorded before keep their clear values until `manage.py rotate_data_keys` seals them.
The blind index is a GIN index (jsonb_path_ops) built on the parent, so on every
partition, for the search's `sensitive_tokens @> {"name": "token"}`.

The append-only function (auditapp/appendonly.py, REFUSE_CHANGE_FUNCTION) is put in again:
it lets one change through in a transaction that set `attest.reencryption` to 'on' (SET
LOCAL, decisions/rotation.py): sealed_inputs and sensitive_tokens set, and inputs only
losing keys (clear sensitive values moving into the blob), every other column as it was.
What the blob holds is not the trigger's to judge: verification opens it and checks the
hash's commitment to it. An erasure (decisions/erasure.py) sets both columns to null.
"""

import json

from django.db import migrations, models

from auditapp.appendonly import REFUSE_CHANGE_FUNCTION
from auditapp.encryption import merged, row_binding
from auditapp.hashing import canonical_json



def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = "decisions_decision"
    schema_editor.execute(REFUSE_CHANGE_FUNCTION, params=None)
    schema_editor.execute(
        f"CREATE INDEX decisions_by_sensitive_token ON {table} "
        "USING gin (sensitive_tokens jsonb_path_ops)"
    )


def unseal_all(connection, table: str) -> None:
    """Going back: every sealed value back in `inputs`, as before this migration (the
    columns go next). Needs the data keys; without them it stops, and nothing is lost."""
    text = "::text" if connection.vendor == "postgresql" else ""
    jsonb = "::jsonb" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, registered_model_id, request_id, inputs{text}, sealed_inputs "
            f"FROM {table} WHERE sealed_inputs IS NOT NULL"
        )
        rows = [
            (
                canonical_json(merged(json.loads(inputs), bytes(sealed), row_binding(model, rid))),
                pk,
            )
            for pk, model, rid, inputs, sealed in cursor.fetchall()
        ]
        cursor.executemany(f"UPDATE {table} SET inputs = %s{jsonb} WHERE id = %s", rows)


def reverse(apps, schema_editor):
    table = "decisions_decision"
    if schema_editor.connection.vendor != "postgresql":
        unseal_all(schema_editor.connection, table)
        return
    schema_editor.execute("DROP INDEX IF EXISTS decisions_by_sensitive_token")
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    unseal_all(schema_editor.connection, table)  # no UPDATE trigger for now
    schema_editor.execute(
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION attest_refuse_change()"
    )


class Migration(migrations.Migration):

    dependencies = [
        ("decisions", "0015_seal_cut"),
    ]

    operations = [
        migrations.AddField(
            model_name="decision",
            name="sealed_inputs",
            field=models.BinaryField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="decision",
            name="sensitive_tokens",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.RunPython(forward, reverse),
    ]
