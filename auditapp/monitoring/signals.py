"""Every new model version gets its monitoring settings and default alert rules."""

from __future__ import annotations

from django.db.models.signals import post_save
from django.dispatch import receiver

from auditapp.monitoring.configuration import ensure_monitoring
from auditapp.registry.models import ModelVersion


@receiver(post_save, sender=ModelVersion, dispatch_uid="monitoring.version_defaults")
def create_monitoring_defaults(sender, instance: ModelVersion, created: bool, **kwargs) -> None:
    """In the registering transaction, so a version is never watched without its rules."""
    if created and not kwargs.get("raw"):
        ensure_monitoring(instance)
