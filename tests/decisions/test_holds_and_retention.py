"""Legal holds and retention of inputs per model (issue 20): holds placed and released by
compliance officers and admins only, a retention run (dry, real, daily task) that
erases the inputs past a model's period and spares what a hold covers, the proof
still verifying.
"""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.utils import timezone

from auditapp.accounts.models import AuditEvent, LogRecord
from auditapp.decisions import tasks
from auditapp.decisions.models import Decision, Erasure, LegalHold, RetentionPolicy
from auditapp.decisions.sealing import seal_new_records
from auditapp.decisions.verification import verify_chain
from tests.factories import DecisionPayloadFactory

pytestmark = pytest.mark.django_db
HOLDS = "/api/v1/legal-holds"


def days_ago(n: int) -> str:
    return (timezone.now() - dt.timedelta(days=n)).isoformat()


@pytest.fixture
def aged(model_version, ingest):
    """Decisions of 60 days ago (two of subject c-held) and two of today."""
    old = [
        DecisionPayloadFactory(predicted_at=days_ago(60), subject_ref=ref)
        for ref in ("c-held", "c-held", "c-a", "c-b")
    ]
    new = DecisionPayloadFactory.build_batch(2)
    ids = [r["id"] for r in ingest(*old, *new)]
    seal_new_records()
    return {"old": ids[:4], "held": ids[:2], "new": ids[4:]}


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("compliance_officer", 201),
        ("admin", 201),
        ("auditor", 403),
        ("ml_engineer", 403),
        ("domain_expert", 403),
        ("anonymous", 401),
    ],
)
def test_only_compliance_officers_and_admins_place_holds(who, status, users, api_client, aged):
    body = {"model": "credit", "subject_ref": "c-held", "reason": "litigation 2026-17"}
    response = api_client(users[who]).post(HOLDS, body, format="json")
    assert response.status_code == status
    if status == 201:
        hold = response.json()
        assert hold["active"] and hold["model"] == "credit" and hold["subject_ref"] == "c-held"
        assert AuditEvent.objects.filter(action="legal_hold.placed").count() == 1
        assert LogRecord.objects.filter(kind="legal_hold").count() == 1
    else:
        assert LegalHold.objects.count() == 0


def test_a_hold_needs_a_reason_and_a_scope(api_client, compliance_officer, aged):
    client = api_client(compliance_officer)
    missing = client.post(HOLDS, {"model": "credit"}, format="json")
    assert missing.status_code == 400 and "reason" in missing.json()["error"]["details"]
    unscoped = client.post(HOLDS, {"reason": "why"}, format="json")
    assert unscoped.status_code == 400 and "scope" in unscoped.json()["error"]["details"]
    hidden = client.post(HOLDS, {"model": "nope", "reason": "why"}, format="json")
    assert hidden.status_code == 400 and "model" in hidden.json()["error"]["details"]


def test_a_hold_s_period_in_any_offset_is_kept_in_utc(api_client, compliance_officer, aged):
    """+18:04 is valid ISO-8601 that PostgreSQL refuses as an offset: it was a 500."""
    body = {"model": "credit", "reason": "r", "from": "2026-01-01T12:00:00+18:04"}
    response = api_client(compliance_officer).post(HOLDS, body, format="json")
    assert response.status_code == 201, response.content
    hold = LegalHold.objects.get()
    assert hold.starts == dt.datetime(2025, 12, 31, 17, 56, tzinfo=dt.UTC)
    outside = {"model": "credit", "reason": "r", "from": "0001-01-01T00:00:00+05:00"}
    refused = api_client(compliance_officer).post(HOLDS, outside, format="json")
    assert refused.status_code == 400 and "from" in refused.json()["error"]["details"]


def test_only_compliance_officers_and_admins_release_holds(
    api_client, compliance_officer, admin, auditor, aged
):
    hold = api_client(compliance_officer).post(
        HOLDS, {"subject_ref": "c-held", "reason": "r"}, format="json"
    )
    url = f"{HOLDS}/{hold.json()['id']}/release"
    assert api_client(auditor).post(url, {"reason": "done"}, format="json").status_code == 403
    assert api_client(admin).post(url, {}, format="json").status_code == 400
    released = api_client(admin).post(url, {"reason": "case closed"}, format="json")
    assert released.status_code == 200
    assert released.json()["active"] is False and released.json()["released_by"] == "admin"
    again = api_client(admin).post(url, {"reason": "x"}, format="json")
    assert again.status_code == 409
    listed = api_client(auditor).get(HOLDS).json()["results"]
    assert [h["release_reason"] for h in listed] == ["case closed"]
    assert LogRecord.objects.filter(kind="legal_hold").count() == 2
    seal_new_records()
    assert verify_chain().ok


def test_retention_is_set_by_compliance_officers_and_admins(
    api_client, compliance_officer, ml_engineer, auditor, aged
):
    url = "/api/v1/models/credit/retention"
    assert api_client(ml_engineer).put(url, {"days": 30}, format="json").status_code == 403
    assert api_client(auditor).put(url, {"days": 30}, format="json").status_code == 403
    bad = api_client(compliance_officer).put(url, {"days": -3}, format="json")
    assert bad.status_code == 400
    done = api_client(compliance_officer).put(url, {"days": 30}, format="json")
    assert done.status_code == 200 and done.json() == {
        "model": "credit",
        "days": 30,
        "duty_days": None,
    }
    assert api_client(auditor).get(url).json()["days"] == 30
    assert AuditEvent.objects.filter(action="retention.set").count() == 1


def test_a_retention_run_erases_what_is_past_the_period_and_spares_what_a_hold_covers(
    api_client, compliance_officer, aged
):
    client = api_client(compliance_officer)
    client.put("/api/v1/models/credit/retention", {"days": 30}, format="json")
    hold = client.post(HOLDS, {"subject_ref": "c-held", "reason": "litigation"}, format="json")

    out = io.StringIO()
    call_command("apply_retention", "--dry-run", stdout=out)
    text = out.getvalue()
    assert "Would erase the inputs of 2 decisions" in text
    assert f"legal hold #{hold.json()['id']} spared 2" in text and "Dry run" in text
    assert not Decision.objects.filter(kept_commitments__isnull=False).exists()

    dry = client.post("/api/v1/retention/run", {"dry_run": True}, format="json").json()
    assert dry["results"][0]["decisions"] == 2 and dry["results"][0]["declaration"] is None

    result = tasks.apply_retention()
    assert tasks.apply_retention.name == "retention.apply"
    assert result == {"credit": 2}
    erased = set(
        Decision.objects.filter(kept_commitments__isnull=False).values_list("pk", flat=True)
    )
    assert erased == set(aged["old"]) - set(aged["held"])
    assert Erasure.objects.get().cause == Erasure.RETENTION
    seal_new_records()
    verified = verify_chain()
    assert verified.ok, verified.first_bad
    assert verified.decisions == 6 and verified.records["erasure"] == 1

    # Released, the hold no longer spares them: the next run erases them.
    client.post(f"{HOLDS}/{hold.json()['id']}/release", {"reason": "closed"}, format="json")
    again = client.post("/api/v1/retention/run", {}, format="json").json()
    assert again["results"][0]["decisions"] == 2 and again["results"][0]["already_erased"] == 2
    assert Decision.objects.filter(kept_commitments__isnull=False).count() == 4
    assert not Decision.objects.filter(pk__in=aged["new"], kept_commitments__isnull=False)


@pytest.mark.parametrize(
    ("method", "url", "body", "named"),
    [
        # a misspelt dry_run ran for real: erased what the caller meant to preview
        ("post", "/api/v1/retention/run", {"dryrun": True}, "dryrun"),
        # a misspelt subject_ref held the whole model: every subject's erasure refused
        ("post", HOLDS, {"model": "credit", "subjet_ref": "c-held", "reason": "r"}, "subjet_ref"),
        ("put", "/api/v1/models/credit/retention", {"days": 30, "duty": 10}, "duty"),
    ],
    ids=["retention_run", "hold", "retention_period"],
)
def test_a_misspelt_field_is_refused_by_name_and_nothing_happens(
    api_client, compliance_officer, admin, aged, method, url, body, named
):
    RetentionPolicy.objects.create(
        registered_model=Decision.objects.first().registered_model, days=30
    )
    client = api_client(admin if "retention" in url and method == "put" else compliance_officer)

    response = getattr(client, method)(url, body, format="json")

    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["details"]) == [named]
    assert not Decision.objects.filter(kept_commitments__isnull=False).exists()
    assert not LegalHold.objects.exists()
    assert RetentionPolicy.objects.get().days == 30


def test_without_a_period_nothing_is_erased(aged):
    RetentionPolicy.objects.create(
        registered_model=Decision.objects.first().registered_model, days=None
    )
    out = io.StringIO()
    call_command("apply_retention", stdout=out)
    assert "No model has a retention period." in out.getvalue()
    assert Erasure.objects.count() == 0


def test_the_retention_run_is_refused_to_readers(api_client, auditor, ml_engineer, aged):
    for user in (auditor, ml_engineer):
        response = api_client(user).post("/api/v1/retention/run", {"dry_run": True}, format="json")
        assert response.status_code == 403


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"dry_run": "true"}, "dry_run"),
        ({"dry_run": 1}, "dry_run"),
        ({"dry_run": None}, "dry_run"),
        ({"dry_run": True, "model": 123}, "model"),
        ({"dry_run": True, "model": ""}, "model"),
        (["dry_run"], None),
        ("dry_run", None),
    ],
    ids=["string", "number", "null", "model_number", "model_empty", "list", "text"],
)
def test_a_retention_run_s_dry_run_must_say_true_or_false(
    api_client, compliance_officer, aged, body, named
):
    """{"dry_run": "true"} (or 1, or null) and a body that is not an object ran for real:
    the caller meant a preview and the inputs past the period were erased."""
    RetentionPolicy.objects.create(
        registered_model=Decision.objects.first().registered_model, days=30
    )

    response = api_client(compliance_officer).post("/api/v1/retention/run", body, format="json")

    assert response.status_code == 400, response.content
    if named:
        assert list(response.json()["error"]["details"]) == [named]
    assert not Decision.objects.filter(kept_commitments__isnull=False).exists()
    assert not Erasure.objects.exists()


@pytest.mark.parametrize("body", [["reason"], "reason", 5], ids=["list", "text", "number"])
def test_a_hold_or_its_release_that_is_not_an_object_is_refused(
    api_client, compliance_officer, aged, body
):
    """A JSON body that was not an object was a 500 (AttributeError) on both."""
    client = api_client(compliance_officer)
    placed = client.post(HOLDS, body, format="json")
    assert placed.status_code == 400, placed.content
    assert not LegalHold.objects.exists()

    hold = client.post(HOLDS, {"subject_ref": "c-held", "reason": "r"}, format="json").json()
    released = client.post(f"{HOLDS}/{hold['id']}/release", body, format="json")
    assert released.status_code == 400, released.content
    assert LegalHold.objects.get().released_at is None


def test_a_release_with_a_field_it_does_not_take_is_refused_by_name(
    api_client, compliance_officer, aged
):
    """{"reason", "until"} released the hold at once, "until" ignored."""
    client = api_client(compliance_officer)
    hold = client.post(HOLDS, {"subject_ref": "c-held", "reason": "r"}, format="json").json()
    body = {"reason": "case closed", "until": "2027-01-01T00:00:00Z"}
    response = client.post(f"{HOLDS}/{hold['id']}/release", body, format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["details"]) == ["until"]
    assert LegalHold.objects.get().released_at is None


@pytest.mark.parametrize(
    "moment",
    [
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:00+25:00",
    ],
    ids=["month_13", "february_30", "hour_24", "offset_25_hours"],
)
@pytest.mark.parametrize("field", ["from", "to"])
def test_a_hold_s_impossible_moment_is_refused_by_name(
    api_client, compliance_officer, aged, moment, field
):
    """A moment shaped as ISO-8601 but impossible (month 13, an offset of 25 hours) was a
    500 (ValueError from the parser)."""
    body = {"model": "credit", "reason": "r", field: moment}
    response = api_client(compliance_officer).post(HOLDS, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]
    assert not LegalHold.objects.exists()


@pytest.fixture
def fraud(register, admin):
    """A second model, registered by the admin: hidden from a token narrowed to credit."""
    version = register(admin, name="fraud")
    RetentionPolicy.objects.create(registered_model=version.registered_model, days=30)
    return version


def test_a_hidden_model_s_holds_and_retention_answer_as_a_missing_one_s(
    api_client, token_client, compliance_officer, admin, aged, fraud
):
    """A token narrowed to credit (`--models credit`) listed, read and released the holds
    of fraud, a model it cannot see, and its retention run planned (or ran) fraud's
    erasure, {"model": "fraud"} answering 200 where a missing model is a 404."""
    hidden = api_client(compliance_officer).post(
        HOLDS, {"model": "fraud", "reason": "fraud matter"}, format="json"
    )
    everywhere = api_client(compliance_officer).post(
        HOLDS, {"subject_ref": "c-held", "reason": "every model"}, format="json"
    )
    narrowed, _ = token_client(admin, ["admin"], models=["credit"])

    listed = narrowed.get(HOLDS).json()["results"]
    assert [h["id"] for h in listed] == [everywhere.json()["id"]]
    missing = narrowed.get(f"{HOLDS}/99999")
    read = narrowed.get(f"{HOLDS}/{hidden.json()['id']}")
    assert read.status_code == missing.status_code == 404
    released = narrowed.post(
        f"{HOLDS}/{hidden.json()['id']}/release", {"reason": "x"}, format="json"
    )
    assert released.status_code == 404
    assert LegalHold.objects.get(pk=hidden.json()["id"]).released_at is None

    run = narrowed.post("/api/v1/retention/run", {"dry_run": True}, format="json")
    assert run.status_code == 200 and [r["model"] for r in run.json()["results"]] == []
    named = narrowed.post(
        "/api/v1/retention/run", {"dry_run": True, "model": "fraud"}, format="json"
    )
    nope = narrowed.post("/api/v1/retention/run", {"dry_run": True, "model": "nope"}, format="json")
    assert named.status_code == nope.status_code == 404
    assert named.json()["error"]["code"] == nope.json()["error"]["code"]


def test_active_false_lists_the_released_holds_not_every_hold(
    api_client, compliance_officer, auditor, aged
):
    """?active=false answered every hold, the active ones with them: read as the released
    holds, it listed holds still in force among them."""
    client = api_client(compliance_officer)
    kept = client.post(HOLDS, {"subject_ref": "c-held", "reason": "r"}, format="json").json()
    gone = client.post(HOLDS, {"subject_ref": "c-a", "reason": "r"}, format="json").json()
    client.post(f"{HOLDS}/{gone['id']}/release", {"reason": "closed"}, format="json")
    reader = api_client(auditor)

    def listed(query) -> list[int]:
        return [h["id"] for h in reader.get(HOLDS, query).json()["results"]]

    assert listed({"active": "true"}) == listed({"active": "1"}) == [kept["id"]]
    assert listed({"active": "false"}) == listed({"active": "0"}) == [gone["id"]]
    assert listed({}) == [gone["id"], kept["id"]]
