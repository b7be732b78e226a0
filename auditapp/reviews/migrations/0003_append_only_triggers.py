"""On PostgreSQL, triggers refuse UPDATE, DELETE and TRUNCATE on the append-only tables."""

from django.db import migrations

from auditapp.appendonly import append_only_triggers


class Migration(migrations.Migration):
    dependencies = [("reviews", "0002_reviewcase_override_caseevent_and_more")]
    operations = [append_only_triggers("reviews_feedback", "reviews_caseevent", "reviews_override")]
