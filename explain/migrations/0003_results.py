"""Explanation results become insert-only rows (ExplanationResult), their configurations
rows of their own (ExplanationConfig); the work row points to its newest result."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

from auditapp.appendonly import append_only_triggers


class Migration(migrations.Migration):
    dependencies = [
        ("decisions", "0001_initial"),
        ("registry", "0002_explain_settings_self_test"),
        ("explain", "0002_decision_served_by_the_unique_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="ExplanationConfig",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("method", models.CharField(max_length=10)),
                ("explainer", models.CharField(max_length=100)),
                ("library_version", models.CharField(max_length=50)),
                ("output_space", models.CharField(max_length=20)),
                ("content", models.JSONField()),
                ("version_hashes", models.BooleanField(default=False)),
                ("digest", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "model_version",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="registry.modelversion",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("model_version", "method", "digest"),
                        name="one_config_per_version_method",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="ExplanationResult",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("base_value", models.FloatField()),
                ("attributions", models.BinaryField()),
                ("top_features", models.JSONField()),
                ("quality", models.JSONField(default=dict)),
                ("seed", models.BigIntegerField(blank=True, null=True)),
                ("duration_ms", models.FloatField(blank=True, null=True)),
                ("computed_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "config",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="results",
                        to="explain.explanationconfig",
                    ),
                ),
                (
                    "decision",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="explanation_results",
                        to="decisions.decision",
                    ),
                ),
            ],
        ),
        migrations.AddField(
            model_name="explanation",
            name="result",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="explain.explanationresult",
            ),
        ),
        migrations.AddField(
            model_name="explanation",
            name="agreement",
            field=models.JSONField(blank=True, null=True),
        ),
        append_only_triggers("explain_explanationconfig", "explain_explanationresult"),
    ]
