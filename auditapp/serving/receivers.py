"""A new traffic policy: what requests cached of the policy in force no longer counts
(accounts/revision.py)."""

from django.db.models.signals import post_save

from auditapp.accounts import revision
from auditapp.serving.models import TrafficPolicy

post_save.connect(revision.changed, sender=TrafficPolicy, dispatch_uid="revision-TrafficPolicy")
