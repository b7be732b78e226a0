"""Only unfinished work rows (pending, running, failed) are in the (status, updated_at)
index the sweeper and the overview read: a done row, nearly every row, costs no entry
(16 B a decision compacted, 36 B as written at N = 20,000)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("decisions", "0017_unique_keys_per_statement"),
        ("explain", "0009_counterfactuals"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="explanation",
            index=models.Index(
                condition=models.Q(("status__in", ["pending", "running", "failed"])),
                fields=["status", "updated_at"],
                name="unfinished_work",
            ),
        ),
        migrations.RemoveIndex(
            model_name="explanation",
            name="explain_exp_status_451b29_idx",
        ),
    ]
