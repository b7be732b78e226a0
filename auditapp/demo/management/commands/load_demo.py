"""Demo data for the quick start: one user per role, a credit model, ~2,000 decisions.

The decisions span the two weeks before the model was registered. Those older
than a week have their true outcome recorded (as a bank learns who repaid),
and the last two complete (UTC) days, and today so far, come from applicants
after an economic shock, so that the monitoring pages have performance figures
and real drift to show. The model decides like a lender: it declines about one
applicant in five before the downturn and about one in three during it.
"""

import io
import json
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.test import Client

from auditapp.accounts import roles
from auditapp.accounts.services import create_api_token, create_user, revoke_api_token
from auditapp.approvals import services as approvals
from auditapp.approvals.models import Approval
from auditapp.decisions.outcomes import record_outcomes
from auditapp.demo import credit
from auditapp.monitoring.models import DAY
from auditapp.monitoring.snapshots import request_snapshot
from auditapp.monitoring.windows import window_floor
from auditapp.registry import services as registry
from auditapp.registry.models import ModelVersion

DEMO_USERS = [
    ("admin", roles.ADMIN),
    ("mlengineer", roles.ML_ENGINEER),
    ("compliance", roles.COMPLIANCE_OFFICER),
    ("expert", roles.DOMAIN_EXPERT),
    ("auditor", roles.AUDITOR),
]
MODEL, VERSION = "credit", "1"
REPLAY_BATCH = 500
PERIOD = timedelta(days=14)  # the replayed decisions span this, up to registration
OUTCOMES_AFTER = timedelta(days=7)  # decisions older than this have their outcome
DOWNTURN_DAYS = 2  # complete days after the downturn began (today follows them)
TRAINING_ROWS = 4000  # of credit.applicants(6000, seed=7); the next rows are held out
# Held-out applicants registered as the background sample, monitoring's reference. A
# day (~140 decisions) measured against 200 of them crossed PSI 0.2 by chance on about
# one ordinary day in six (the score); against 1,000, only the downturn's days do.
BACKGROUND_ROWS = 1000


def downturn_start(registered_at: datetime) -> datetime:
    """When the downturn began: midnight (UTC) DOWNTURN_DAYS before the registration's day.

    On a day boundary, so that each of its days (monitoring's day windows) is all
    downturn, whatever the time of day the demo is loaded.
    """
    return window_floor(DAY, registered_at) - timedelta(days=DOWNTURN_DAYS)


def demo_password(username: str) -> str:
    return f"attest-{username}"


class Command(BaseCommand):
    help = "Load demo users, a demo credit model and replay decisions through the API (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--decisions", type=int, default=2000)
        parser.add_argument("--host", default="127.0.0.1:8000", help="Where the site will be.")

    def handle(self, *args, **options):
        users = self._users()
        model_version = self._model(users["mlengineer"], users["compliance"])
        registry.assign_models(users["expert"], [MODEL])
        created, payloads = self._replay(users["mlengineer"], model_version, options["decisions"])
        outcomes = self._outcomes(users["mlengineer"], model_version, payloads)
        self._daily_monitoring(users["mlengineer"], model_version)
        self.stdout.write(
            self.style.SUCCESS(
                f"\nDemo data ready: {created} new decisions, {outcomes} new outcomes."
            )
        )
        self.stdout.write(f"Open http://{options['host']}/ and log in as one of:")
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<12} password {demo_password(username):<20} ({role})")

    def _users(self) -> dict:
        users = {}
        user_model = get_user_model()
        for username, role in DEMO_USERS:
            user = user_model.objects.filter(username=username).first()
            users[username] = user or create_user(username, role, password=demo_password(username))
        return users

    def _model(self, engineer, compliance) -> ModelVersion:
        existing = ModelVersion.objects.filter(
            registered_model__name=MODEL, version=VERSION
        ).first()
        if existing:
            return existing
        self.stdout.write("Training the demo credit model on synthetic applicants…")
        frame = credit.applicants(6000, seed=7)
        model = credit.train_model(frame.iloc[:TRAINING_ROWS])
        held_out = frame.iloc[TRAINING_ROWS:]
        background = io.StringIO()
        held_out[credit.FEATURES].iloc[:BACKGROUND_ROWS].to_csv(background, index=False)
        import skops.io

        actor = roles.Actor(user=engineer)
        upload = registry.VersionUpload(
            name=MODEL,
            version=VERSION,
            artifact=skops.io.dumps(model),
            artifact_format="skops",
            schema=credit.SCHEMA,
            background=background.getvalue().encode(),
            card={
                "description": (
                    "Probability that a consumer loan goes bad (defaults) within 12 months; "
                    "an application is declined when it is 0.5 or more."
                ),
                "intended_use": "Decision support for consumer loans up to EUR 100,000.",
                "limitations": "Trained on synthetic applicants; not for real lending.",
                "training_data": (
                    f"{TRAINING_ROWS:,} synthetic applicants from auditapp/demo/credit.py; "
                    f"the metrics are on {len(held_out):,} held-out applicants."
                ),
                "metrics": credit.holdout_metrics(model, held_out),
            },
        )
        model_version = registry.register_model_version(actor, upload)
        # Four-eyes, as in real use: the engineer asks, the compliance officer approves.
        asked = registry.change_stage(actor, model_version, ModelVersion.PRODUCTION)
        if isinstance(asked, Approval):
            approvals.approve(
                roles.Actor(user=compliance), asked.pk, "Demo: held-out metrics reviewed."
            )
        model_version.refresh_from_db()
        return model_version

    def _replay(self, engineer, model_version: ModelVersion, count: int) -> tuple[int, list]:
        frame = credit.applicants(count, seed=11)
        start = model_version.created_at - PERIOD
        spacing = PERIOD / max(count, 1)
        downturn = downturn_start(model_version.created_at)
        shocked = [start + spacing * i >= downturn for i in range(count)]
        frame.loc[shocked] = credit.economic_shock(frame.loc[shocked])
        model = registry.load_model(model_version)
        payloads = list(
            credit.decision_payloads(
                model, frame, model_name=MODEL, version=VERSION, start=start, spacing=spacing
            )
        )
        token, key = create_api_token(engineer, scopes=["ingest"], name="demo replay")
        client = Client(HTTP_HOST="localhost")
        created = 0
        try:
            for begin in range(0, len(payloads), REPLAY_BATCH):
                response = client.post(
                    "/api/v1/decisions",
                    data=json.dumps({"decisions": payloads[begin : begin + REPLAY_BATCH]}),
                    content_type="application/json",
                    HTTP_AUTHORIZATION=f"Token {key}",
                )
                if response.status_code != 201:
                    raise RuntimeError(
                        f"replay failed: {response.status_code} {response.content[:500]!r}"
                    )
                results = response.json()["results"]
                created += sum(r["status"] == "created" for r in results)
                self.stdout.write(f"  replayed {begin + len(results)}/{len(payloads)} decisions")
        finally:
            revoke_api_token(token)
        for payload, outcome in zip(payloads, frame["outcome"], strict=True):
            payload["true_outcome"] = outcome
        return created, payloads

    def _outcomes(self, engineer, model_version: ModelVersion, payloads: list[dict]) -> int:
        """The true outcome of every decision older than a week, observed five days after it."""
        cutoff = model_version.created_at - OUTCOMES_AFTER
        outcomes = [
            {
                "model": MODEL,
                "request_id": payload["request_id"],
                "outcome": payload["true_outcome"],
                "observed_at": (
                    datetime.fromisoformat(payload["predicted_at"]) + timedelta(days=5)
                ).isoformat(),
            }
            for payload in payloads
            if datetime.fromisoformat(payload["predicted_at"]) < cutoff
        ]
        results = record_outcomes(
            roles.Actor(user=engineer), {"outcomes": outcomes}, source="import"
        )
        return sum(r["status"] == "created" for r in results)

    def _daily_monitoring(self, engineer, model_version: ModelVersion) -> None:
        """Queue a monitoring snapshot for every complete day of the demo period.

        Beat computes only the windows that end from now on; the demo's history
        is older, so its days are requested here (the worker computes them).
        """
        actor = roles.Actor(user=engineer)
        day = window_floor(DAY, model_version.created_at - PERIOD)
        last = window_floor(DAY, model_version.created_at)
        while day < last:
            following = day + timedelta(days=1)
            request_snapshot(
                actor, model_version, {"from": day.isoformat(), "to": following.isoformat()}
            )
            day = following
