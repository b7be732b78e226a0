from django import template

from auditapp.accounts import records

register = template.Library()


@register.filter
def record_counts(counts: dict[str, int] | None) -> str:
    """A verification's rows of other kinds, as people read them: "1 feedback, 3 outcomes"."""
    return records.describe_counts(counts or {})
