"""Each place of the top reasons indexed with the decision's time and id (the search
page's order) instead of alone: a page of a reason reads the first matches of each place
and stops, instead of every match of the period (dossier.filters.ReasonFilter).

On PostgreSQL the new indexes are built before the old ones are dropped; building them
locks the reasons against writes (an explanation's store waits) for a few seconds a
million decisions.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("explain", "0012_top_reasons_one_row_a_decision")]

    operations = [
        *(
            migrations.AddIndex(
                model_name="topreasons",
                index=models.Index(
                    fields=[place, "predicted_at", "decision"], name=f"reasons_{place}_time"
                ),
            )
            for place in ("first", "second", "third")
        ),
        *(
            migrations.RemoveIndex(model_name="topreasons", name=f"reasons_{place}")
            for place in ("first", "second", "third")
        ),
    ]
