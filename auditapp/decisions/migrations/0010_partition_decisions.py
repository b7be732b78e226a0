"""On PostgreSQL, decisions are partitioned by month of their id (auditapp/partitions.py).

The rows recorded so far become the partition decisions_decision_legacy, in place;
this month's partition and the next ones are created. SQLite is left as it is.
"""

from django.db import migrations

from auditapp import partitions

TABLE = "decisions_decision"
UNIQUE = ("registered_model_id", "request_id")  # the constraint unique_request_id_per_model


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        partitions.partition_table(schema_editor, TABLE, unique=UNIQUE)


def reverse(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        partitions.unpartition_table(schema_editor, TABLE)


class Migration(migrations.Migration):
    dependencies = [("decisions", "0009_decisions_by_score")]
    operations = [migrations.RunPython(forward, reverse)]
