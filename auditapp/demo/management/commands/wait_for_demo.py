"""Wait until the demo's SHAP explanations are computed, then say where to log in.

`make run` starts it beside the server and the worker, so that the logins and
the address come last, after the worker's start-up lines, once every demo
decision can be read with its explanation.
"""

import time

from django.core.management.base import BaseCommand
from django.db.models import Count

from auditapp.demo.management.commands.load_demo import DEMO_USERS, MODEL, demo_password
from explain.models import Explanation

WAITING = (Explanation.PENDING, Explanation.RUNNING)


def shap_progress() -> tuple[int, int]:
    """(explanations finished, all) of the demo model's decisions, SHAP only."""
    rows = (
        Explanation.objects.filter(decision__registered_model__name=MODEL, method="shap")
        .values("status")
        .annotate(n=Count("id"))
    )
    counts = {row["status"]: row["n"] for row in rows}
    total = sum(counts.values())
    return total - sum(counts.get(status, 0) for status in WAITING), total


class Command(BaseCommand):
    help = "Wait for the demo's SHAP explanations, then print the address and the demo logins."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1:8000", help="Where the site is.")
        parser.add_argument(
            "--timeout", type=float, default=900, help="Seconds to wait at most (then say so)."
        )
        parser.add_argument("--every", type=float, default=10, help="Seconds between progress.")

    def handle(self, *args, **options):
        began, said = time.monotonic(), 0.0
        done, total = shap_progress()
        while done < total and time.monotonic() - began < options["timeout"]:
            if time.monotonic() - said >= options["every"]:
                self.stdout.write(f"Explaining the demo's decisions: {done:,} of {total:,} done…")
                said = time.monotonic()
            time.sleep(1)
            done, total = shap_progress()
        self.stdout.write(self.box(options["host"], done, total))

    def box(self, host: str, done: int, total: int) -> str:
        state = (
            f"All {total:,} demo decisions are explained."
            if done == total
            else f"{done:,} of {total:,} demo decisions are explained so far; the rest follow."
        )
        lines = [
            "Attest is ready.",
            state,
            "",
            f"Open http://{host}/ and log in as one of:",
            *(
                f"  {username:<12} password {demo_password(username):<20} ({role})"
                for username, role in DEMO_USERS
            ),
            "",
            "Ctrl-C stops the server and the worker.",
        ]
        width = max(len(line) for line in lines)
        rule = "+" + "-" * (width + 2) + "+"
        body = [f"| {line:<{width}} |" for line in lines]
        return "\n".join(["", rule, *body, rule])
