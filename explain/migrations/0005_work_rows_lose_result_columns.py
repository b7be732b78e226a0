"""The work rows keep only work state: their results are ExplanationResult rows (0004)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("explain", "0004_results_of_existing_rows"),
    ]

    operations = [
        migrations.RemoveField(model_name="explanation", name=name)
        for name in (
            "explainer",
            "library_version",
            "output_space",
            "base_value",
            "attributions",
            "top_features",
            "quality",
            "config",
            "seed",
            "duration_ms",
        )
    ]
