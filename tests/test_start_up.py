"""Starting Attest loads no machine-learning library: a `manage.py` command that needs none
(an auditor's `verify_proof`, `check`, `migrate`) starts in about a second, not four.

The explanation libraries load when something explains, the artifact checks when a model
is registered or loaded. A fresh interpreter is the only honest check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEAVY = ("shap", "sklearn", "skops", "lime", "numba", "matplotlib", "fairlearn", "weasyprint")

SCRIPT = """
import json, sys
import django
django.setup()
from django.core.management import get_commands
get_commands()
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def loaded_at_start_up() -> set[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "auditapp.settings"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_django_setup_loads_no_machine_learning_library():
    assert loaded_at_start_up() & set(HEAVY) == set()
