"""Monitoring tasks called the way a worker calls them, the beat schedule's choice of
windows, and the whole flow through the broker with a real worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError

from auditapp.monitoring import snapshots, tasks, windows
from auditapp.monitoring.models import Alert, MetricSnapshot
from tests.monitoring.conftest import a_day, shifted
from tests.monitoring.test_alerts import Receiver
from tests.workers import Worker, wait_until

# embedded: a worker on the filesystem broker computes the window (tests/conftest.py)
pytestmark = pytest.mark.embedded


def test_task_names_are_a_wire_contract():
    assert tasks.compute_window.name == "monitoring.compute_window"
    assert tasks.compute_due.name == "monitoring.compute_due"
    assert tasks.deliver_webhook.name == "monitoring.deliver_webhook"
    assert tasks.deliver_email.name == "monitoring.deliver_email"
    for task in (tasks.compute_window, tasks.deliver_webhook, tasks.deliver_email):
        assert task.acks_late and task.soft_time_limit < task.time_limit < 3600
    schedule = django_settings.CELERY_BEAT_SCHEDULE["monitoring-compute-due"]
    assert schedule["task"] == "monitoring.compute_due"
    assert schedule["options"]["queue"] == "monitoring"


def test_windows_are_utc_hours_days_and_weeks_from_monday():
    moment = datetime(2026, 11, 19, 15, 42, 7, tzinfo=UTC)  # a Thursday
    assert windows.window_floor("hour", moment) == datetime(2026, 11, 19, 15, tzinfo=UTC)
    assert windows.window_floor("day", moment) == datetime(2026, 11, 19, tzinfo=UTC)
    assert windows.window_floor("week", moment) == datetime(2026, 11, 16, tzinfo=UTC)
    day = datetime(2026, 11, 19, tzinfo=UTC)
    assert windows.window_kind(day, day + timedelta(days=1)) == "day"
    assert windows.window_kind(day, day + timedelta(days=2)) == "custom"
    assert windows.window_kind(day - timedelta(days=3), day + timedelta(days=4)) == "week"


def test_the_schedule_owes_the_last_completed_windows_once(german_version, stream, unseen):
    now = timezone_now()
    stream(unseen.head(40), a_day(1), "yesterday")  # 40 decisions through yesterday

    due = snapshots.due_snapshots(now)

    owed = MetricSnapshot.objects.filter(pk__in=due)
    # (Just after midnight the last completed hour is yesterday's last, owed too.)
    kinds = sorted((s.window, s.window_start) for s in owed if s.window != "hour")
    yesterday = a_day(1)
    expected = [("day", yesterday)]
    if windows.window_floor("week", now) > yesterday:  # today is a Monday
        expected.append(("week", windows.window_floor("week", yesterday)))
    assert kinds == sorted(expected)
    assert {s.status for s in owed} == {"pending"}
    assert snapshots.due_snapshots(now) == []  # not owed twice


def test_a_snapshot_left_pending_is_sent_again(german_version):
    now = timezone_now()
    fresh = snapshots._pending_snapshot(german_version, a_day(3), a_day(2))
    stranded = snapshots._pending_snapshot(german_version, a_day(4), a_day(3))
    MetricSnapshot.objects.filter(pk=stranded.pk).update(created_at=now - timedelta(minutes=20))

    assert snapshots.due_snapshots(now) == [stranded.pk]
    assert fresh.pk not in snapshots.due_snapshots(now)


def test_a_window_is_recomputed_when_outcomes_arrive_later(
    german_version, stream, outcomes, unseen
):
    decisions = stream(unseen.head(40), a_day(2), "late")
    due = snapshots._pending_snapshot(german_version, a_day(2), a_day(1)).pk
    tasks.compute_window.run(due)
    assert MetricSnapshot.objects.get(pk=due).data["performance"] is None
    assert due not in snapshots.due_snapshots(timezone_now())

    outcomes(decisions, unseen["credit"].head(40))

    assert due in snapshots.due_snapshots(timezone_now())
    tasks.compute_window.run(due)
    assert MetricSnapshot.objects.get(pk=due).data["performance"]["outcomes"] == 40


def timezone_now():
    from django.utils import timezone

    return timezone.now()


def test_a_failure_is_written_on_the_snapshot(german_version, monkeypatch):
    snapshot = snapshots._pending_snapshot(german_version, a_day(3), a_day(2))

    def broken(*args):
        raise ValueError("the reference cannot be read")

    monkeypatch.setattr(snapshots, "compute_window_metrics", broken)
    result = tasks.compute_window.apply(args=(snapshot.pk,)).get()

    snapshot.refresh_from_db()
    assert result["status"] == "failed"
    assert (snapshot.status, snapshot.error) == (
        "failed",
        "ValueError: the reference cannot be read",
    )


def test_a_database_outage_is_retried_then_written_on_the_snapshot(german_version, monkeypatch):
    snapshot = snapshots._pending_snapshot(german_version, a_day(3), a_day(2))
    calls = []

    def unavailable(*args):
        calls.append(1)
        raise OperationalError("server closed the connection")

    monkeypatch.setattr(snapshots, "compute_window_metrics", unavailable)
    tasks.compute_window.apply(args=(snapshot.pk,))

    snapshot.refresh_from_db()
    assert len(calls) == tasks.MAX_RETRIES + 1
    assert snapshot.status == "failed" and "database unavailable" in snapshot.error


@pytest.fixture
def worker(media_root, tmp_path, monkeypatch):
    receiver = Receiver([200])
    monkeypatch.setenv("ATTEST_ALERT_WEBHOOK_URL", receiver.url)
    process = Worker(media_root, tmp_path / "worker.log", queues=(tasks.QUEUE,))
    yield process, receiver
    process.stop()
    receiver.close()


@pytest.mark.django_db(transaction=True)
def test_a_window_requested_over_the_api_is_computed_by_a_worker_and_its_alerts_delivered(
    role_groups, ml_engineer, german_version, stream, unseen, api_client, worker, settings
):
    _process, receiver = worker
    settings.ATTEST_ALERT_WEBHOOK_URL = receiver.url
    day = a_day(3)
    stream(shifted(unseen), day, "e2e")
    url = "/api/v1/models/german/versions/1/monitoring"
    period = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}

    response = api_client(ml_engineer).post(url, period, format="json")

    assert response.status_code == 202
    snapshot_id = response.json()["id"]

    def finished() -> bool:
        return MetricSnapshot.objects.get(pk=snapshot_id).status in ("done", "failed")

    wait_until(finished, "the worker to compute the snapshot")
    listed = api_client(ml_engineer).get(url + "?window=day").json()["results"]
    assert [(s["id"], s["status"], s["decisions"]) for s in listed] == [(snapshot_id, "done", 300)]
    assert listed[0]["drift"]["credit_amount"]["drifted"] is True
    wait_until(lambda: len(receiver.received) >= Alert.objects.count() > 0, "the webhook calls")
    delivered = {r["body"]["alert"]["subject"] for r in receiver.received}
    assert {"credit_amount", "age"} <= delivered
    wait_until(
        lambda: not Alert.objects.exclude(webhook_status="sent").exists(), "delivery to be noted"
    )
