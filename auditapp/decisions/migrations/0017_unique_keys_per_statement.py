"""On PostgreSQL, the (model, request_id) keys of inserted decisions are kept by one
statement-level trigger (a transition table) instead of one INSERT per row."""

from django.db import migrations

from auditapp import partitions

TABLE = "decisions_decision"
UNIQUE = ("registered_model_id", "request_id")

ROW_LEVEL_FUNCTION = """
CREATE OR REPLACE FUNCTION decisions_decision_unique_key() RETURNS trigger AS $$
BEGIN
    INSERT INTO decisions_decision_unique (registered_model_id, request_id, id)
    VALUES (NEW.registered_model_id, NEW.request_id, NEW.id);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
"""


def per_statement(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        partitions.keep_unique_keys_per_statement(schema_editor, TABLE, UNIQUE)


def per_row(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        cursor = schema_editor.connection.cursor()
        cursor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_unique_key ON {TABLE}")
        cursor.execute(ROW_LEVEL_FUNCTION)
        cursor.execute(
            f"CREATE TRIGGER {TABLE}_unique_key BEFORE INSERT ON {TABLE} "
            f"FOR EACH ROW EXECUTE FUNCTION {TABLE}_unique_key()"
        )


class Migration(migrations.Migration):
    dependencies = [("decisions", "0016_sealed_inputs")]
    operations = [migrations.RunPython(per_statement, per_row)]
