"""Number and date formatting shared by the report templates and the tests that read PDFs
back (auditapp/formatting.py)."""

from django import template
from django.utils.safestring import mark_safe

from auditapp import formatting
from auditapp.reports import render

register = template.Library()

# The formatting functions themselves, under the names the templates use.
for name, function in {
    "figure": render.figure,
    "percent": render.percent,
    "signed_percent": formatting.signed_percent,
    "count": formatting.count,
    "p_value": formatting.p_value,
    "ms": formatting.milliseconds,
    "hours": formatting.hours,
    "day": formatting.day,
    "moment": formatting.moment,
    "period_label": formatting.period_label,
    "figure_label": formatting.figure_label,
}.items():
    register.filter(name, function)


@register.filter
def rate(value):
    """Rates, ratios, PSI: three decimals."""
    return formatting.decimal(value)


@register.filter
def rate2(value):
    """Score bin edges: two decimals."""
    return formatting.decimal(value, 2, whole=False)


@register.filter
def span_to(start, end):
    """{{ start|span_to:end }}: "21-27 Nov 2026" (en dash) for a half-open period."""
    return formatting.span(start, end)


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
