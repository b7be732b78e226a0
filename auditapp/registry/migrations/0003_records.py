"""Stage changes become append-only; existing versions and stage changes join the log."""

from django.db import migrations

from auditapp.accounts.records import backfill
from auditapp.appendonly import append_only_triggers


def record_existing(apps, schema_editor):
    backfill(apps, schema_editor, ["model_version", "stage_change"])


class Migration(migrations.Migration):
    dependencies = [("registry", "0002_explain_settings_self_test"), ("accounts", "0007_logrecord")]
    operations = [
        append_only_triggers("registry_stagechange"),
        migrations.RunPython(record_existing, migrations.RunPython.noop),
    ]
