"""`{% monitoring_thresholds as limits %}`: the thresholds for any template that states
them (the monitoring pages, the compliance report), so none writes a number of its own."""

from django import template

from auditapp.monitoring import thresholds

register = template.Library()


@register.simple_tag
def monitoring_thresholds() -> dict[str, float]:
    return thresholds.as_context()
