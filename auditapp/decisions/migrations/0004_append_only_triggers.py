"""On PostgreSQL, triggers refuse UPDATE, DELETE and TRUNCATE on the append-only tables."""

from django.db import migrations

from auditapp.appendonly import append_only_triggers


class Migration(migrations.Migration):
    dependencies = [("decisions", "0003_seal")]
    operations = [append_only_triggers("decisions_decision", "decisions_outcome", "decisions_seal")]
