"""A decision's arm and the decision a shadow one scored (serving/).

Both columns are nullable without a default: on PostgreSQL, ALTER TABLE on the
partitioned parent adds them to every partition (the legacy one included) without
rewriting a row, and ingested decisions keep null, which their content hash never
covered (hashing.SERVED_FIELDS). The index is partial (shadow decisions only); built on
the parent, PostgreSQL builds it on each partition. SQLite adds the columns in place.
"""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('decisions', '0011_retirement'),
        ('registry', '0003_records'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='decision',
            name='arm',
            field=models.CharField(blank=True, choices=[('production', 'production'), ('canary', 'canary'), ('fallback', 'fallback'), ('shadow', 'shadow')], max_length=10, null=True),
        ),
        migrations.AddField(
            model_name='decision',
            name='served_by',
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='decision',
            index=models.Index(condition=models.Q(('served_by__isnull', False)), fields=['served_by'], name='decisions_by_served'),
        ),
    ]
