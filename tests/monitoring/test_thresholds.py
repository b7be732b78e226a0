"""Each monitoring threshold is stated in one place (monitoring/thresholds.py): change one
and the metrics, the default rules, the chart titles and the templates follow; no template
writes one of them as a number of its own."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from django.template import Context, Template

from auditapp.monitoring import alerts, metrics, thresholds, views

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
STATING_THRESHOLDS = [
    *sorted((TEMPLATES / "monitoring").glob("*.html")),
    TEMPLATES / "reports" / "compliance_pdf.html",
]


@pytest.mark.parametrize("template", STATING_THRESHOLDS, ids=lambda p: p.name)
def test_no_template_writes_a_threshold_as_a_literal(template):
    text = template.read_text()
    for value in thresholds.as_context().values():
        literal = re.compile(rf"(?<![\d.]){re.escape(f'{value:g}')}(?![\d])")
        assert not literal.search(text), f"{template.name} writes {value:g}: use limits.*"


@pytest.fixture
def moved(monkeypatch):
    """Thresholds other than the shipped ones, so nothing can pass by coincidence."""
    monkeypatch.setattr(thresholds, "PSI_SHIFT", 0.3)
    monkeypatch.setattr(thresholds, "DRIFT_P_VALUE", 0.01)
    monkeypatch.setattr(thresholds, "FOUR_FIFTHS", 0.75)
    monkeypatch.setattr(thresholds, "ROC_AUC_DROP", 0.07)
    monkeypatch.setattr(thresholds, "EXPLANATION_FAILURE_RATE", 0.02)


def test_default_rules_follow_the_thresholds(moved):
    rules = {metric: (name, threshold) for name, metric, _, threshold in alerts.default_rules()}
    assert rules == {
        "input_drift_psi": ("Input drift: PSI above 0.3", 0.3),
        "score_drift_psi": ("Score drift: PSI above 0.3", 0.3),
        "disparate_impact_ratio": ("Disparate impact below 0.75 (four-fifths rule)", 0.75),
        "roc_auc_drop": ("ROC AUC more than 0.07 below the reference", 0.07),
        "explanation_failure_rate": ("Explanation failure rate above 2 %", 0.02),
    }


def test_metrics_follow_the_thresholds(moved):
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 2000)
    current = rng.normal(0.45, 1, 2000)  # PSI about 0.2: a shift at 0.2, none at 0.3
    entry = metrics.numeric_drift(reference, current)
    assert 0.2 < entry["psi"] < 0.3 and entry["ks_p"] < 0.01
    assert entry["drifted"] is False


def test_templates_read_the_thresholds(moved):
    text = Template(
        "{% load monitoring_thresholds %}{% monitoring_thresholds as limits %}"
        "{{ limits.psi_shift }} {{ limits.drift_p_value }} {{ limits.four_fifths }}"
    ).render(Context())
    assert text == "0.3 0.01 0.75"


@pytest.mark.django_db
def test_chart_titles_follow_the_thresholds(moved, german_version):
    figures = views._figures(german_version, [])
    assert "above 0.3 is a shift" in figures["latest_psi"].title
    assert all("below 0.75 fails the four-fifths rule" in c.title for c in figures["fairness"])
    assert figures["fairness"]
