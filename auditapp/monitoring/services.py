"""The names auditapp/monitoring/tasks.py calls as `services.*`, until that module is
reshaped to import the modules that define them. Nothing else imports this module:
windows.py, snapshots.py, alerts.py, delivery.py and configuration.py hold the code."""

from __future__ import annotations

from auditapp.monitoring.delivery import (
    TransientDeliveryError,
    delivery_failed,
    send_email,
    send_webhook,
)
from auditapp.monitoring.snapshots import (
    compute_snapshot,
    due_snapshots,
    enqueue_snapshot,
    fail_snapshot,
)

__all__ = [
    "TransientDeliveryError",
    "compute_snapshot",
    "delivery_failed",
    "due_snapshots",
    "enqueue_snapshot",
    "fail_snapshot",
    "send_email",
    "send_webhook",
]
