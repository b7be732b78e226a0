"""API tokens and the append-only audit log."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from auditapp.appendonly import AppendOnlyModel
from auditapp.hashing import canonical_ip, commitment, sha256_hex


class ApiToken(models.Model):
    """A scoped API key. Only the sha256 of the key is stored; the key is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    key_prefix = models.CharField(max_length=12, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    model_names = models.JSONField(
        default=list, blank=True, help_text="Model names this token is limited to; empty: no limit."
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Not stored: the configuration revision a request authenticated it at (None: unknown),
    # by which what the request reads next may be cached (accounts/revision.py).
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.key_prefix}… ({self.user})"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


class AuditEvent(AppendOnlyModel):
    """Who did what to which object, when, from where. Never updated or deleted."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=200, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    # The registered model the event concerns (blank: none), so that an actor who
    # may see only some models reads only their events. Derived from the target and
    # details at recording time; not hashed, as it restates what they say.
    model = models.CharField(max_length=100, blank=True, db_index=True)
    # Values only readers with view_sensitive may see (a search on a sensitive
    # feature): the hash covers a salted commitment to them, not the values.
    sensitive_details = models.JSONField(default=dict, blank=True)
    salt = models.BinaryField(null=True, blank=True)
    # sha256 of the fields above (canonical JSON), sealed into the hash chain like decisions.
    content_hash = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.action}"

    def hashed_fields(self) -> dict:
        return event_document(
            {
                "at": self.at,
                "actor_id": self.actor_id,
                "actor_name": self.actor_name,
                "action": self.action,
                "object_type": self.object_type,
                "object_id": self.object_id,
                "ip": canonical_ip(self.ip),
                "details": self.details,
            },
            self.sensitive_details,
            None if self.salt is None else bytes(self.salt),
        )

    def sensitive_commitment(self) -> str | None:
        return self.hashed_fields().get("sensitive_details")

    def compute_content_hash(self) -> str:
        return sha256_hex(self.hashed_fields())


def event_document(fields: dict, sensitive: dict, salt: bytes | None) -> dict:
    """What an event's content hash covers: its fields, and a commitment to any sensitive part."""
    if salt is None:
        return fields
    return {**fields, "sensitive_details": commitment(salt, sensitive)}


class LogRecord(AppendOnlyModel):
    """One record of a row an auditor relies on (a model version, an outcome, ...) in the log.

    Registered kinds and their documents: accounts/records.py. The seal after it
    appends it to the Merkle tree as a leaf b"record:" + content hash.
    """

    kind = models.CharField(max_length=32)
    object_id = models.BigIntegerField()
    content_hash = models.CharField(max_length=64)
    recorded_at = models.DateTimeField(default=timezone.now)
    # Written by an upgrade's migration for a row older than its kind's place in the
    # log: its own time is not checked against the record's (and such records must
    # come before every other record of their kind).
    backfilled = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["kind", "object_id"])]

    def __str__(self) -> str:
        return f"record {self.pk}: {self.kind} {self.object_id}"


class SingleSignOnIdentity(models.Model):
    """The IdP's account (issuer, subject) behind an Attest user signed in by OpenID Connect.

    Sign-in finds the user by this link, never by a username or e-mail the IdP sends:
    an IdP account named like a local account (`admin`) does not become it.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identity"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_unique")
        ]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer} ({self.user})"
