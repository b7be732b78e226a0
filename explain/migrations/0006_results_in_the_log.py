"""Explanation results computed before results were records of the log join it."""

from django.db import migrations

from auditapp.accounts.records import backfill


def record_existing(apps, schema_editor):
    backfill(apps, schema_editor, ["explanation"])


class Migration(migrations.Migration):
    dependencies = [
        ("explain", "0005_work_rows_lose_result_columns"),
        ("accounts", "0007_logrecord"),
    ]
    operations = [migrations.RunPython(record_existing, migrations.RunPython.noop)]
