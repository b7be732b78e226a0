"""A registered model, its assignees or a version changed: what requests cached of which
models an actor may see, and of their versions, no longer counts (accounts/revision.py)."""

from django.db.models.signals import m2m_changed, post_delete, post_save

from auditapp.accounts import revision
from auditapp.registry.models import ModelVersion, RegisteredModel

for _model in (RegisteredModel, ModelVersion):
    post_save.connect(revision.changed, sender=_model, dispatch_uid=f"revision-{_model.__name__}")
    post_delete.connect(
        revision.changed, sender=_model, dispatch_uid=f"revision-{_model.__name__}-deleted"
    )
m2m_changed.connect(
    revision.changed, sender=RegisteredModel.assignees.through, dispatch_uid="revision-assignees"
)
