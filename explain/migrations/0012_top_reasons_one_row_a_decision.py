"""The top reasons become one row a decision (explain.TopReasons: first, second, third,
each under an index) instead of a row per reason with two indexes: 407 B a decision to
123 B at a million, the searches alike. Reversible: each row becomes its three again."""

import django.db.models.deletion
from django.db import migrations, models

# Portable SQL (PostgreSQL and SQLite alike).
TO_ONE_ROW = """
    INSERT INTO explain_topreasons (decision_id, first, second, third, predicted_at)
    SELECT decision_id,
           MAX(CASE WHEN rank = 1 THEN feature END),
           COALESCE(MAX(CASE WHEN rank = 2 THEN feature END), ''),
           COALESCE(MAX(CASE WHEN rank = 3 THEN feature END), ''),
           MAX(predicted_at)
    FROM explain_topreason
    GROUP BY decision_id
"""
TO_A_ROW_EACH = """
    INSERT INTO explain_topreason (decision_id, feature, rank, predicted_at)
    SELECT decision_id, first, 1, predicted_at FROM explain_topreasons
    UNION ALL
    SELECT decision_id, second, 2, predicted_at FROM explain_topreasons WHERE second <> ''
    UNION ALL
    SELECT decision_id, third, 3, predicted_at FROM explain_topreasons WHERE third <> ''
"""


def to_one_row(apps, schema_editor):
    schema_editor.execute(TO_ONE_ROW)


def to_a_row_each(apps, schema_editor):
    schema_editor.execute(TO_A_ROW_EACH)


class Migration(migrations.Migration):
    dependencies = [
        ("decisions", "0017_unique_keys_per_statement"),
        ("explain", "0011_results_keep_no_top_features"),
    ]

    operations = [
        migrations.CreateModel(
            name="TopReasons",
            fields=[
                (
                    "decision",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="decisions.decision",
                    ),
                ),
                ("first", models.TextField()),
                ("second", models.TextField(blank=True, default="")),
                ("third", models.TextField(blank=True, default="")),
                ("predicted_at", models.DateTimeField()),
            ],
            options={
                "indexes": [
                    models.Index(fields=["first"], name="reasons_first"),
                    models.Index(fields=["second"], name="reasons_second"),
                    models.Index(fields=["third"], name="reasons_third"),
                ],
            },
        ),
        migrations.RunPython(to_one_row, to_a_row_each),
        migrations.DeleteModel(
            name="TopReason",
        ),
    ]
