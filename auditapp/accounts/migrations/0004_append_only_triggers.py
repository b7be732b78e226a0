"""On PostgreSQL, triggers refuse UPDATE, DELETE and TRUNCATE on the append-only tables."""

from django.db import migrations

from auditapp.appendonly import append_only_triggers


class Migration(migrations.Migration):
    dependencies = [("accounts", "0003_auditevent_content_hash")]
    operations = [append_only_triggers("accounts_auditevent")]
