"""Number formatting shared by the report templates and the tests that read PDFs back."""

from django import template
from django.utils.safestring import mark_safe

from auditapp.reports import render

register = template.Library()


@register.filter
def figure(value):
    return render.figure(value)


@register.filter
def percent(value):
    return render.percent(value)


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
