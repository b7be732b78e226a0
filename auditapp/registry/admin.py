from django.contrib import admin

from auditapp.accounts.admin import ReadOnlyAdmin
from auditapp.registry.models import ModelVersion, RegisteredModel, StageChange


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ("name", "task", "owner", "created_at")
    fields = ("name", "description", "task", "owner", "assignees")
    readonly_fields = ("name", "task", "owner")
    filter_horizontal = ("assignees",)

    def has_add_permission(self, request):
        return False  # models are registered through the API, which checks the artifact

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("registered_model", "version", "stage", "artifact_sha256", "created_at")


@admin.register(StageChange)
class StageChangeAdmin(ReadOnlyAdmin):
    list_display = ("model_version", "from_stage", "to_stage", "changed_by", "changed_at")
