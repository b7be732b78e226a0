"""Alert rules: raised once per breach, resolved when back within bounds; delivery by a
webhook (a real HTTP server on 127.0.0.1) and by e-mail (Django's locmem outbox)."""

from __future__ import annotations

import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.monitoring import alerts, snapshots, tasks
from auditapp.monitoring.documents import SnapshotDocument
from auditapp.monitoring.models import Alert, AlertRule, MetricSnapshot
from tests.monitoring.conftest import a_day, shifted
from tests.oidc_provider import POLL


def compute_day(version, user, day) -> MetricSnapshot:
    """Request the day window as the API does, then run the task as the worker would."""
    period = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
    snapshot = snapshots.request_snapshot(roles.Actor(user=user), version, period)
    assert tasks.compute_window.run(snapshot.pk)["status"] == MetricSnapshot.DONE
    return MetricSnapshot.objects.get(pk=snapshot.pk)


def drift_alerts(**filters):
    return Alert.objects.filter(metric="input_drift_psi", **filters).order_by("subject", "id")


def test_every_version_gets_the_default_rules(german_version):
    rules = AlertRule.objects.filter(model_version=german_version, is_default=True)

    assert sorted((r.metric, r.comparison, r.threshold, r.window) for r in rules) == [
        ("disparate_impact_ratio", "lt", 0.8, "day"),
        ("explanation_failure_rate", "gt", 0.01, "day"),
        ("input_drift_psi", "gt", 0.2, "day"),
        ("roc_auc_drop", "gt", 0.05, "day"),
        ("score_drift_psi", "gt", 0.2, "day"),
    ]


def test_an_alert_is_raised_once_per_breach_and_resolved_when_back_within_bounds(
    german_version, stream, unseen, ml_engineer
):
    stream(shifted(unseen), a_day(6), "s1")
    stream(shifted(unseen), a_day(5), "s2")
    stream(unseen, a_day(4), "ok")
    stream(shifted(unseen), a_day(3), "s3")

    first = compute_day(german_version, ml_engineer, a_day(6))
    assert [(a.subject, a.state) for a in drift_alerts()] == [
        ("age", "open"),
        ("credit_amount", "open"),
    ]
    age = drift_alerts().get(subject="age")
    assert age.snapshot == first
    assert age.value == pytest.approx(first.data["drift"]["age"]["psi"])
    assert "german v1" in age.message and "'age'" in age.message

    second = compute_day(german_version, ml_engineer, a_day(5))  # still breached: no new alert
    assert drift_alerts().count() == 2
    age.refresh_from_db()
    assert age.last_value == pytest.approx(second.data["drift"]["age"]["psi"])

    compute_day(german_version, ml_engineer, a_day(4))  # back within bounds
    assert [a.state for a in drift_alerts()] == ["resolved", "resolved"]

    compute_day(german_version, ml_engineer, a_day(3))  # a new breach, new alerts
    assert drift_alerts().count() == 4
    assert drift_alerts(state="open").count() == 2
    events = AuditEvent.objects.filter(action__in=["alert.raised", "alert.resolved"])
    raised = events.filter(action="alert.raised", details__metric="input_drift_psi")
    assert raised.count() == 4
    assert events.filter(action="alert.resolved").count() >= 2


def test_no_drift_alert_within_bounds(german_version, stream, unseen, ml_engineer):
    stream(unseen, a_day(3), "ok")

    compute_day(german_version, ml_engineer, a_day(3))

    assert drift_alerts().count() == 0


def test_an_older_window_recomputed_does_not_raise_or_resolve(
    german_version, stream, unseen, ml_engineer
):
    stream(unseen, a_day(4), "ok")
    stream(shifted(unseen), a_day(3), "s")
    compute_day(german_version, ml_engineer, a_day(3))

    compute_day(german_version, ml_engineer, a_day(4))

    assert drift_alerts(state="open").count() == 2


def test_a_window_with_too_few_decisions_is_not_judged(german_version, stream, unseen, ml_engineer):
    stream(shifted(unseen).head(10), a_day(3), "few")

    snapshot = compute_day(german_version, ml_engineer, a_day(3))

    assert snapshot.decisions == 10
    assert Alert.objects.count() == 0


def test_a_breached_acknowledged_alert_stays_acknowledged_and_is_not_raised_again(
    german_version, stream, unseen, ml_engineer, compliance_officer
):
    stream(shifted(unseen), a_day(4), "a")
    stream(shifted(unseen), a_day(3), "b")
    compute_day(german_version, ml_engineer, a_day(4))
    age = drift_alerts().get(subject="age")

    alerts.acknowledge_alert(roles.Actor(user=compliance_officer), age)
    compute_day(german_version, ml_engineer, a_day(3))

    age.refresh_from_db()
    assert (age.state, age.acknowledged_by) == ("acknowledged", compliance_officer)
    assert drift_alerts(subject="age").count() == 1
    event = AuditEvent.objects.get(action="alert.acknowledged")
    assert (event.actor, event.object_id) == (compliance_officer, str(age.pk))


def test_a_small_window_is_not_judged_for_drift_until_it_holds_enough_decisions(
    german_version, stream, unseen, ml_engineer, settings
):
    """A 40-decision partial day of a shifted stream raises nothing; the full day does."""
    stream(shifted(unseen).iloc[:40], a_day(3), "partial")
    small = compute_day(german_version, ml_engineer, a_day(3))
    assert small.decisions == 40 and small.data["drift"]["age"]["psi"] > 0.2  # figures kept
    assert not Alert.objects.filter(metric__in=["input_drift_psi", "score_drift_psi"]).exists()

    stream(shifted(unseen).iloc[40:], a_day(3), "rest")
    compute_day(german_version, ml_engineer, a_day(3))
    assert drift_alerts(state="open").filter(subject="age").exists()


@pytest.mark.parametrize(("positives", "judged"), [(17, False), (30, True)])
def test_performance_is_judged_only_with_enough_outcomes_of_each_class(positives, judged):
    """A ROC AUC drop on 17 positives is noise: no alert is raised nor resolved on it."""
    document = SnapshotDocument.from_document(
        {"performance": {"outcomes": 200, "positive_rate": positives / 200, "roc_auc_drop": 0.2}}
    )
    assert alerts.enough_evidence("roc_auc_drop", document, 200) is judged
    assert alerts.enough_evidence("input_drift_psi", document, 99) is False
    assert alerts.enough_evidence("disparate_impact_ratio", document, 30) is True


def test_a_rule_on_a_model_applies_to_its_versions(german_version, stream, unseen, ml_engineer):
    AlertRule.objects.create(
        name="Score drift",
        metric="score_drift_psi",
        comparison="gt",
        threshold=0.0,
        registered_model=german_version.registered_model,
    )
    stream(unseen, a_day(3), "ok")

    compute_day(german_version, ml_engineer, a_day(3))

    (alert,) = Alert.objects.filter(metric="score_drift_psi")
    assert alert.subject == ""


# --- delivery ------------------------------------------------------------------------------


class Receiver:
    """A real HTTP server on 127.0.0.1 answering with the given statuses in turn."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                receiver.received.append(
                    {
                        "body": json.loads(self.rfile.read(length)),
                        "type": self.headers["Content-Type"],
                    }
                )
                status = (
                    receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/attest"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": POLL}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request):
    made = []

    def make(*statuses: int) -> Receiver:
        made.append(Receiver(list(statuses)))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def alert(german_version, stream, unseen, ml_engineer, settings):
    settings.ATTEST_ALERT_WEBHOOK_URL = "http://127.0.0.1:9/unused"
    settings.ATTEST_ALERT_EMAILS = ["risk@example.com", "ml@example.com"]
    stream(shifted(unseen), a_day(3), "s")
    compute_day(german_version, ml_engineer, a_day(3))
    raised = drift_alerts().get(subject="credit_amount")
    assert (raised.webhook_status, raised.email_status) == ("pending", "pending")
    return raised


def test_the_webhook_receives_the_alert_as_json(alert, receiver, settings):
    server = receiver(200)
    settings.ATTEST_ALERT_WEBHOOK_URL = server.url

    assert tasks.deliver_webhook.apply(args=(alert.pk,)).get() == "sent"

    (request,) = server.received
    assert request["type"] == "application/json"
    assert request["body"]["event"] == "alert.raised"
    body = request["body"]["alert"]
    assert (body["id"], body["model"], body["version"]) == (alert.pk, "german", "1")
    assert (body["metric"], body["subject"], body["state"]) == (
        "input_drift_psi",
        "credit_amount",
        "open",
    )
    assert body["value"] == pytest.approx(alert.value)
    alert.refresh_from_db()
    assert (alert.webhook_status, alert.webhook_error) == ("sent", "")


def test_the_webhook_is_retried_while_the_receiver_fails(alert, receiver, settings):
    server = receiver(503, 503, 200)
    settings.ATTEST_ALERT_WEBHOOK_URL = server.url

    assert tasks.deliver_webhook.apply(args=(alert.pk,)).get() == "sent"

    assert len(server.received) == 3
    alert.refresh_from_db()
    assert alert.webhook_status == "sent"


def test_an_unreachable_webhook_fails_on_the_alert_after_its_retries(alert, settings):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.ATTEST_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{port}/"

    assert tasks.deliver_webhook.apply(args=(alert.pk,)).get() == "failed"

    alert.refresh_from_db()
    assert alert.webhook_status == "failed"
    assert "could not be reached" in alert.webhook_error
    assert f"after {tasks.DELIVERY_RETRIES + 1} tries" in alert.webhook_error


def test_a_refusing_webhook_is_not_retried(alert, receiver, settings):
    server = receiver(404)
    settings.ATTEST_ALERT_WEBHOOK_URL = server.url

    assert tasks.deliver_webhook.apply(args=(alert.pk,)).get() == "failed"

    assert len(server.received) == 1
    alert.refresh_from_db()
    assert alert.webhook_status == "failed" and "404" in alert.webhook_error


def test_the_alert_is_emailed_to_the_configured_recipients(alert):
    assert tasks.deliver_email.apply(args=(alert.pk,)).get() == "sent"

    (message,) = mail.outbox
    assert message.to == ["risk@example.com", "ml@example.com"]
    assert message.subject.startswith(
        "[Attest] german v1: input drift (PSI) of 'credit_amount' is "
    )
    assert "/models/german/versions/1/monitoring/" in message.body
    assert f"{alert.value:.6g}" in message.body
    alert.refresh_from_db()
    assert alert.email_status == "sent"


def test_alerts_are_sent_after_commit_to_the_monitoring_queue(
    german_version, stream, unseen, ml_engineer, settings, django_capture_on_commit_callbacks
):
    settings.ATTEST_ALERT_WEBHOOK_URL = "http://127.0.0.1:9/"
    stream(shifted(unseen), a_day(3), "s")
    period = {"from": a_day(3).isoformat(), "to": a_day(2).isoformat()}
    snapshot = snapshots.request_snapshot(roles.Actor(user=ml_engineer), german_version, period)

    with django_capture_on_commit_callbacks() as callbacks:
        snapshots.compute_snapshot(snapshot.pk)

    assert drift_alerts().count() == 2
    assert len(callbacks) == Alert.objects.count()  # one delivery per raised alert
