"""A case's severity (its most severe rule), kept beside its reasons for the queue's order."""

from django.db import migrations, models

# The rules' severities when this migration was written (reviews/rules.py SEVERITY):
# a migration keeps what it needs of its time.
SEVERITY = {
    "score_not_the_models": 80,
    "expert_disagrees": 60,
    "flagged": 50,
    "additivity_failed": 40,
    "explanation_failed": 30,
    "shap_lime_disagree": 20,
    "score_near_threshold": 10,
}


def severity(reasons):
    return max((SEVERITY.get(r["rule"], 0) for r in reasons), default=0)


def fill_severity(apps, schema_editor):
    ReviewCase = apps.get_model("reviews", "ReviewCase")
    batch = []
    for case in ReviewCase.objects.only("pk", "reasons").iterator(chunk_size=2000):
        case.severity = severity(case.reasons)
        batch.append(case)
        if len(batch) == 2000:
            ReviewCase.objects.bulk_update(batch, ["severity"])
            batch = []
    ReviewCase.objects.bulk_update(batch, ["severity"])


class Migration(migrations.Migration):
    dependencies = [("reviews", "0004_records")]

    operations = [
        migrations.AddField(
            model_name="reviewcase",
            name="severity",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.RunPython(fill_severity, migrations.RunPython.noop),
    ]
