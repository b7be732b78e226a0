"""Alert delivery: the webhook and the e-mail, each a Celery task of its own (tasks.py)
that retries a TransientDeliveryError and writes a final failure on the alert."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from django.conf import settings
from django.core.mail import send_mail

from auditapp.monitoring.alerts import alert_json, load_alert
from auditapp.monitoring.models import Alert, AlertRule

COMPARISON_SIGNS = dict(AlertRule.COMPARISONS)


class TransientDeliveryError(Exception):
    """The receiver could not be reached (or answered 5xx): worth another try."""


def send_webhook(alert_id: int) -> int:
    """POST the alert as JSON to ATTEST_ALERT_WEBHOOK_URL; returns the HTTP status."""
    url = settings.ATTEST_ALERT_WEBHOOK_URL
    if not url.startswith(("http://", "https://")):
        raise ValueError("ATTEST_ALERT_WEBHOOK_URL must be an http(s) URL")
    alert = load_alert(alert_id)
    body = json.dumps({"event": "alert.raised", "alert": alert_json(alert)}).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "Attest-alerts/1"},
    )
    try:
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=settings.ATTEST_ALERT_WEBHOOK_TIMEOUT
        ) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise TransientDeliveryError(f"the webhook answered {exc.code}") from exc
        raise
    except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out
        raise TransientDeliveryError(f"the webhook could not be reached: {exc}") from exc
    _delivered(alert_id, "webhook", "sent", "")
    return status


def send_email(alert_id: int) -> int:
    """E-mail the alert to ATTEST_ALERT_EMAILS through Django's e-mail backend."""
    alert = load_alert(alert_id)
    try:
        sent = send_mail(
            subject=f"[Attest] {alert.message}"[:200],
            message=_email_body(alert),
            from_email=None,
            recipient_list=settings.ATTEST_ALERT_EMAILS,
        )
    except OSError as exc:  # smtplib's errors are OSErrors: the server could not be reached
        raise TransientDeliveryError(f"the mail server could not be reached: {exc}") from exc
    _delivered(alert_id, "email", "sent", "")
    return sent


def _email_body(alert: Alert) -> str:
    model_version = alert.model_version
    link = (
        f"/models/{model_version.registered_model.name}/versions/{model_version.version}"
        "/monitoring/"
    )
    return "\n".join(
        [
            alert.message,
            "",
            f"Rule: {alert.rule.name}",
            f"Value: {alert.value:.6g} (threshold {COMPARISON_SIGNS[alert.comparison]} "
            f"{alert.threshold:g})",
            f"Raised at: {alert.raised_at:%Y-%m-%d %H:%M:%S} UTC",
            f"Monitoring page: {link}",
            "",
            "Acknowledge it on the monitoring dashboard (/monitoring/) once it is being handled.",
        ]
    )


def _delivered(alert_id: int, channel: str, status: str, error: str) -> None:
    Alert.objects.filter(pk=alert_id).update(
        **{f"{channel}_status": status, f"{channel}_error": error[:2000]}
    )


def delivery_failed(alert_id: int, channel: str, reason: str) -> None:
    """A final failure of one channel, written on the alert."""
    _delivered(alert_id, channel, "failed", reason)
