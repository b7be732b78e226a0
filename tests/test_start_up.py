"""Starting Attest loads no machine-learning library: a `manage.py` command that needs none
(an auditor's `verify_proof`, `check`, `migrate`) starts in about a second, not four.

The explanation libraries load when something explains, the artifact checks when a model
is registered or loaded. A fresh interpreter is the only honest check.
"""

from __future__ import annotations

import os

from tests.workers import python_json

# pandas too: 0.85 s of every process's start on the 2-core machine (a Celery worker, each
# `manage.py` command), when only the schema's frames need it.
HEAVY = (
    "pandas",
    "shap",
    "sklearn",
    "skops",
    "lime",
    "numba",
    "matplotlib",
    "fairlearn",
    "weasyprint",
)

SCRIPT = """
import json, sys
import django
django.setup()
from django.core.management import get_commands
get_commands()
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""

# What the site's URLs load: every view module, as a web process's first request, `manage.py
# check` and `migrate` (its system checks) load them. The monitoring figures still bring
# fairlearn, scikit-learn and SciPy (a second and a half); the model artifacts (skops, three
# seconds) and the explanation methods must not come with them.
URLS_SCRIPT = SCRIPT.replace(
    "get_commands()",
    "get_commands()\nfrom django.urls import get_resolver\nget_resolver().url_patterns",
)
NOT_WITH_THE_URLS = ("shap", "skops", "lime", "numba", "matplotlib", "weasyprint")


def loaded_at_start_up(script: str = SCRIPT) -> set[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "auditapp.settings"}
    return set(python_json(script, env))


def test_django_setup_loads_no_machine_learning_library():
    assert loaded_at_start_up() & set(HEAVY) == set()


def test_the_site_urls_load_neither_the_artifact_readers_nor_the_explanation_methods():
    assert loaded_at_start_up(URLS_SCRIPT) & set(NOT_WITH_THE_URLS) == set()
