"""Number and date formatting shared by the report templates and the tests that read PDFs
back (auditapp/reports/formatting.py)."""

from django import template
from django.utils.safestring import mark_safe

from auditapp.reports import formatting, render

register = template.Library()


@register.filter
def figure(value):
    return render.figure(value)


@register.filter
def percent(value):
    return render.percent(value)


@register.filter
def signed_percent(value):
    return formatting.signed_percent(value)


@register.filter
def count(value):
    return formatting.count(value)


@register.filter
def rate(value):
    """Rates, ratios, PSI: three decimals."""
    return formatting.decimal(value)


@register.filter
def rate2(value):
    """Score bin edges: two decimals."""
    return formatting.decimal(value, 2, whole=False)


@register.filter
def p_value(value):
    return formatting.p_value(value)


@register.filter
def ms(value):
    return formatting.milliseconds(value)


@register.filter
def hours(value):
    return formatting.hours(value)


@register.filter
def day(value):
    return formatting.day(value)


@register.filter
def moment(value):
    return formatting.moment(value)


@register.filter
def span_to(start, end):
    """{{ start|span_to:end }}: "21-27 Nov 2026" (en dash) for a half-open period."""
    return formatting.span(start, end)


@register.filter
def period_label(start, end):
    return formatting.period_label(start, end)


@register.filter
def figure_label(key):
    return formatting.figure_label(key)


@register.filter
def svg(chart):
    """A chart's SVG markup; charts.py escapes every label it draws."""
    return mark_safe(chart.svg)  # noqa: S308


@register.filter
def get(mapping, key):
    return mapping.get(key) if hasattr(mapping, "get") else None


@register.filter
def flat(value):
    """(dotted path, value) rows of a nested document, as the CSV export writes them."""
    return [(".".join(path), item) for path, item in render.flatten(value) if path]


@register.filter
def outcome_tone(decision):
    """ "adverse" / "favourable" / "" for a decision's pill, from its schema's outcome semantics."""
    return decision.model_version.parsed_schema.target.tone(decision.prediction)
