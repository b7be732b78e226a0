"""Existing feedback, review cases, their events and overrides join the log."""

from django.db import migrations

from auditapp.accounts.records import backfill


def record_existing(apps, schema_editor):
    backfill(apps, schema_editor, ["feedback", "review_case", "case_event", "override"])


class Migration(migrations.Migration):
    dependencies = [("reviews", "0003_append_only_triggers"), ("accounts", "0007_logrecord")]
    operations = [migrations.RunPython(record_existing, migrations.RunPython.noop)]
