from django.contrib import admin

from auditapp.accounts.admin import ReadOnlyAdmin
from auditapp.decisions.models import Decision


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ("id", "registered_model", "request_id", "prediction", "score", "predicted_at")
    list_select_related = ("registered_model",)
