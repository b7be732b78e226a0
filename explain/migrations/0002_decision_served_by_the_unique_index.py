"""Explanation.decision loses its own index: one_explanation_per_method (decision, method)
serves every lookup by decision. Only the index is dropped (the foreign key stays as it
is, unvalidated again), on PostgreSQL and SQLite alike."""

import django.db.models.deletion
from django.db import migrations, models

INDEX = "explain_explanation_decision_id_be50d552"


class Migration(migrations.Migration):
    dependencies = [
        ("explain", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="explanation",
                    name="decision",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="explanations",
                        to="decisions.decision",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{INDEX}"',
                    reverse_sql=f'CREATE INDEX "{INDEX}" ON "explain_explanation" ("decision_id")',
                ),
            ],
        ),
    ]
