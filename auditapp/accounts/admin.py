"""The Django admin (admins only: is_staff is set for the admin role alone)."""

from django.contrib import admin
from django_otp.plugins.otp_totp.models import TOTPDevice

from auditapp.accounts.models import ApiToken, AuditEvent, SingleSignOnIdentity


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records are never changed by hand: the admin shows them, nothing more."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor_name", "action", "object_type", "object_id", "ip")
    list_filter = ("action",)
    search_fields = ("actor_name", "object_id")


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = (
        "key_prefix",
        "user",
        "name",
        "scopes",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )


@admin.register(SingleSignOnIdentity)
class SingleSignOnIdentityAdmin(ReadOnlyAdmin):
    list_display = ("user", "issuer", "subject", "created_at", "last_login_at")
    search_fields = ("user__username", "subject")


# django-otp's own admin shows and edits the secret, and removes devices unaudited: here
# devices are read only, without their key; `manage.py reset_two_factor` removes them.
admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(ReadOnlyAdmin):
    list_display = ("user", "name", "confirmed", "created_at", "last_used_at")
    fields = ("user", "name", "confirmed", "created_at", "last_used_at", "throttling_failure_count")
    search_fields = ("user__username",)
