"""A result no longer stores its top features: TopReason keeps the newest SHAP result's for
the search, the compliance report ranks the attributions it reads, and the API derives
them (explain.ranking), 48 bytes of jsonb a result less. Rows written before keep theirs
(the column is not in a result's hashed document).

Going back leaves the column nullable: rows written since have none, and results are
insert-only (explain.0007's fill ranks their attributions instead)."""

from django.db import migrations, models


class AllowNullForward(migrations.AlterField):
    """AlterField to a nullable column whose reversal leaves the column as it is."""

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        pass


class Migration(migrations.Migration):
    dependencies = [
        ("explain", "0010_only_unfinished_work_indexed"),
    ]

    operations = [
        AllowNullForward(
            model_name="explanationresult",
            name="top_features",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
