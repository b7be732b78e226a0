"""Two-factor authentication: TOTP devices (django-otp) enrolled, verified and reset.

Who must use them is roles.two_factor_required; the pages are accounts/views.py and
accounts/middleware.py keeps those who must from every other page until they have.
A wrong code counts against the device: after n wrong codes in a row the next is not
even checked for 2^(n-1) seconds (django-otp's throttling, OTP_TOTP_THROTTLE_FACTOR).
A code is good once (a device remembers the last time step it accepted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import qrcode
import qrcode.image.svg
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from auditapp.accounts.audit import record_event

DEVICE_NAME = "authenticator app"


@dataclass(frozen=True)
class CodeCheck:
    """A code's verdict: accepted, or refused (and for how many seconds no code is checked)."""

    device: TOTPDevice | None
    wait_seconds: int = 0
    throttled: bool = False  # refused unchecked: too soon after the last wrong code

    @property
    def accepted(self) -> bool:
        return self.device is not None


def confirmed_device(user) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


@transaction.atomic
def pending_device(user) -> TOTPDevice:
    """The device being enrolled: a new secret until a code from it is confirmed."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return device or TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


def qr_code_svg(uri: str) -> str:
    """The otpauth:// URI as an SVG QR code (drawn here: no image service, no inline script)."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return image.to_string(encoding="unicode")


@transaction.atomic
def confirm_device(user, code: str, *, ip=None) -> CodeCheck:
    """Enrolment: a good code from the pending device confirms it (`two_factor.enrolled`)."""
    device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).first()
    if device is None:
        return CodeCheck(None)
    check = _check(device, code, user, ip, enrolling=True)
    if check.accepted:
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        record_event("two_factor.enrolled", user=user, target=device, ip=ip)
    return check


@transaction.atomic
def verify_code(user, code: str, *, ip=None) -> CodeCheck:
    """A sign-in's second step: a good code from the user's device (`two_factor.verified`)."""
    device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=True).first()
    if device is None:
        return CodeCheck(None)
    check = _check(device, code, user, ip, enrolling=False)
    if check.accepted:
        record_event("two_factor.verified", user=user, target=device, ip=ip)
    return check


def _check(device: TOTPDevice, code: str, user, ip, *, enrolling: bool) -> CodeCheck:
    allowed, _ = device.verify_is_allowed()
    if device.verify_token(code.strip()):
        return CodeCheck(device)
    device.refresh_from_db(fields=["throttling_failure_count", "throttling_failure_timestamp"])
    wait = _wait_seconds(device)
    record_event(
        "two_factor.failed",
        user=user,
        target=device,
        ip=ip,
        enrolling=enrolling,
        throttled=not allowed,
        failures=device.throttling_failure_count,
    )
    return CodeCheck(None, wait_seconds=wait, throttled=not allowed)


def _wait_seconds(device: TOTPDevice) -> int:
    allowed, data = device.verify_is_allowed()
    if allowed or not data or "locked_until" not in data:
        return 0
    return max(1, math.ceil((data["locked_until"] - timezone.now()).total_seconds()))


@transaction.atomic
def reset_devices(user, *, actor=None) -> int:
    """Remove the user's devices: they enrol again at their next sign-in (`two_factor.reset`)."""
    deleted, _ = TOTPDevice.objects.filter(user=user).delete()
    record_event("two_factor.reset", actor=actor, target=user, devices=deleted)
    return deleted
