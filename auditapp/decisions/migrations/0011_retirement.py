"""Retirement declarations and their ranges (decisions/retention.py); the append-only
triggers' function learns the one DELETE it lets through (auditapp/appendonly.py)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from auditapp.appendonly import append_only_triggers


class Migration(migrations.Migration):

    dependencies = [
        ('decisions', '0010_partition_decisions'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Retirement',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('month', models.CharField(max_length=7)),
                ('declared_at', models.DateTimeField()),
                ('actor_name', models.CharField(blank=True, max_length=150)),
                ('mode', models.CharField(choices=[('detach', 'partitions detached'), ('drop', 'partitions dropped'), ('delete', 'rows deleted')], max_length=10)),
                ('tables', models.JSONField()),
                ('declared_by', models.ForeignKey(null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['id'],
            },
        ),
        migrations.CreateModel(
            name='RetiredRange',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('table_name', models.CharField(max_length=63)),
                ('first_id', models.BigIntegerField()),
                ('last_id', models.BigIntegerField()),
                ('retirement', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='ranges', to='decisions.retirement')),
            ],
            options={
                'indexes': [models.Index(fields=['retirement', 'table_name', 'first_id'], name='decisions_r_retirem_35b3b2_idx')],
            },
        ),
        # (CREATE OR REPLACE of attest_refuse_change first: every append-only table's triggers)
    append_only_triggers("decisions_retirement", "decisions_retiredrange"),
]
