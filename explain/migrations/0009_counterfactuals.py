"""Counterfactuals (issue 18): insert-only results and their configurations, and a work row
per decision. Plain tables on PostgreSQL too (not partitioned by month like explanation
results: one result per adverse decision and recomputation, far fewer rows); the results
and configurations get the append-only triggers."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from auditapp.appendonly import append_only_triggers


class Migration(migrations.Migration):

    dependencies = [
        ('decisions', '0010_partition_decisions'),
        ('explain', '0008_partition_results'),
        ('registry', '0003_records'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='CounterfactualConfig',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('method', models.CharField(max_length=40)),
                ('method_version', models.PositiveSmallIntegerField()),
                ('library_versions', models.JSONField(default=dict)),
                ('content', models.JSONField()),
                ('digest', models.CharField(max_length=64)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('model_version', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='registry.modelversion')),
            ],
        ),
        migrations.CreateModel(
            name='CounterfactualResult',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('document', models.JSONField()),
                ('quality', models.JSONField(default=dict)),
                ('found', models.PositiveSmallIntegerField(default=0)),
                ('seed', models.BigIntegerField()),
                ('error', models.TextField(blank=True, default='')),
                ('duration_ms', models.FloatField(blank=True, null=True)),
                ('computed_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('config', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='results', to='explain.counterfactualconfig')),
                ('decision', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='counterfactual_results', to='decisions.decision')),
                ('requested_by', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'abstract': False,
            },
        ),
        migrations.CreateModel(
            name='CounterfactualWork',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(choices=[('pending', 'pending'), ('running', 'running'), ('done', 'done'), ('failed', 'failed')], default='pending', max_length=10)),
                ('attempts', models.PositiveSmallIntegerField(default=0)),
                ('error', models.TextField(blank=True, default='')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('updated_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('decision', models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name='counterfactual_work', to='decisions.decision')),
                ('requested_by', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('result', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='explain.counterfactualresult')),
            ],
        ),
        migrations.AddConstraint(
            model_name='counterfactualconfig',
            constraint=models.UniqueConstraint(fields=('model_version', 'digest'), name='one_counterfactual_config_per_version'),
        ),
        migrations.AddIndex(
            model_name='counterfactualwork',
            index=models.Index(fields=['status', 'updated_at'], name='cf_work_by_status'),
        ),
        append_only_triggers("explain_counterfactualconfig", "explain_counterfactualresult"),
    ]
