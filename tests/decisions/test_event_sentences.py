"""The access log reads as sentences: every action the code records has one, its objects
are links to their pages where the reader may open them, the raw details stay behind a
toggle, and a masked value stays masked (issue 17, "the reviewer's day").

The log with every event type is made through the real code paths (sign-in, searches,
exports, feedback, reviews, monitoring, reports, seals...); the few no test can reach
cheaply (a decision notice, which needs computed explanations) are recorded as the code
records them.
"""

from __future__ import annotations

import ast
import base64
import csv
import io
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.test import Client
from django.utils.timezone import now
from rest_framework.test import APIClient

from auditapp import formatting
from auditapp.accounts import event_sentences, roles, two_factor
from auditapp.accounts.access_log import CSV_COLUMNS
from auditapp.accounts.audit import record_event
from auditapp.accounts.event_sentences import (
    OBJECT_NAMES,
    SENTENCES,
    Context,
    Facts,
    describe,
    detail_lines,
)
from auditapp.accounts.models import AuditEvent
from auditapp.accounts.services import (
    SignOn,
    create_api_token,
    create_user,
    record_sso_failure,
    revoke_api_token,
    set_roles,
    sign_on,
)
from auditapp.approvals import services as approvals
from auditapp.approvals.models import Approval
from auditapp.decisions.audit_pages import describe_events
from auditapp.decisions.importing import import_decisions
from auditapp.decisions.models import Decision
from auditapp.decisions.outcomes import record_outcomes
from auditapp.decisions.sealing import latest_seal, seal_new_records
from auditapp.decisions.verification import verify_as
from auditapp.monitoring import alerts, snapshots, windows
from auditapp.monitoring.configuration import configure_monitoring
from auditapp.monitoring.models import Alert, AlertRule
from auditapp.registry.services import change_stage, set_four_eyes
from auditapp.reports import services as reports
from auditapp.reports.models import Report
from auditapp.reviews.exports import export_labelled
from auditapp.reviews.services import flag_decision, resolve_case, submit_feedback, take_case
from auditapp.serving.services import change_traffic
from explain.counterfactual_work import request_counterfactuals
from explain.services import request_explanations
from explain.whatif import run_what_if
from tests.conftest import PASSWORD
from tests.decisions.test_import import write_csv
from tests.factories import DecisionPayloadFactory

ROOT = Path(__file__).resolve().parents[2]


# --- every action the code records -------------------------------------------------------


class Unresolved(Exception):
    pass


class Code:
    """The project's modules (auditapp/ and explain/, migrations aside), parsed once."""

    def __init__(self):
        self.modules = {}
        for path in sorted([*ROOT.glob("auditapp/**/*.py"), *ROOT.glob("explain/**/*.py")]):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            self.modules[name] = ast.parse(path.read_text(), filename=str(path))
        # Each call, with its module and the innermost function it is in.
        self.calls = []
        for name, tree in self.modules.items():
            where = {}
            for function in ast.walk(tree):  # outer functions first: inner ones overwrite
                if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    for node in ast.walk(function):
                        where[node] = function
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    self.calls.append((name, node, where.get(node)))

    def calls_to(self, function: str):
        for module, call, inside in self.calls:
            called = call.func.id if isinstance(call.func, ast.Name) else None
            called = call.func.attr if isinstance(call.func, ast.Attribute) else called
            if called == function:
                yield module, call, inside

    def constant(self, module: str, name: str) -> set[str]:
        tree = self.modules[module]
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                return self.values(module, node.value, None)
            if isinstance(node, ast.ImportFrom) and node.module in self.modules:
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        return self.constant(node.module, alias.name)
        raise Unresolved(f"{module}: {name}")

    def values(self, module: str, node: ast.expr, inside) -> set[str]:
        """Every string the expression can be, following constants, parameters and f-strings."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            return self.values(module, node.body, inside) | self.values(module, node.orelse, inside)
        if isinstance(node, ast.JoinedStr):
            found = {""}
            for piece in node.values:
                inner = piece.value if isinstance(piece, ast.FormattedValue) else piece
                found = {a + b for a in found for b in self.values(module, inner, inside)}
            return found
        if isinstance(node, ast.Name):
            if inside is not None:
                if node.id in [a.arg for a in (*inside.args.args, *inside.args.kwonlyargs)]:
                    return self.arguments(inside, node.id)
                assigned = [
                    n.value
                    for n in ast.walk(inside)
                    if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == node.id for t in n.targets)
                ]
                if assigned:
                    return set().union(*(self.values(module, v, inside) for v in assigned))
            return self.constant(module, node.id)
        raise Unresolved(f"{module}:{node.lineno}: {ast.unparse(node)}")

    def arguments(self, function: ast.FunctionDef, parameter: str) -> set[str]:
        """What the callers of `function` pass as `parameter`."""
        positional = [a.arg for a in function.args.args]
        found = set()
        for module, call, inside in self.calls_to(function.name):
            given = [k.value for k in call.keywords if k.arg == parameter]
            if not given and parameter in positional:
                index = positional.index(parameter)
                if any(isinstance(a, ast.Starred) for a in call.args[: index + 1]):
                    raise Unresolved(f"{module}:{call.lineno}: {ast.unparse(call)}")
                given = call.args[index : index + 1]
            for value in given:
                found |= self.values(module, value, inside)
        if not found:
            raise Unresolved(f"no caller passes {function.name}({parameter})")
        return found

    def recorded_actions(self) -> set[str]:
        actions = set()
        for module, call, inside in self.calls_to("record_event"):
            action = (
                call.args[0]
                if call.args
                else next((k.value for k in call.keywords if k.arg == "action"), None)
            )
            if action is None:
                raise Unresolved(f"{module}:{call.lineno}: record_event without an action")
            actions |= self.values(module, action, inside)
        return actions


@pytest.fixture(scope="module")
def recorded_actions() -> set[str]:
    return Code().recorded_actions()


def test_the_scan_finds_the_actions_behind_constants_parameters_and_fstrings(recorded_actions):
    assert {
        "auth.login",  # a literal
        "decisions.ingested",  # a constant imported from another module
        "outcomes.recorded",  # through record_counts_per_model's parameter
        "audit_log.viewed",  # either branch of a conditional
        "audit_log.exported",
        "review.taken",  # an f-string over _transition's callers
        "review.resolved",
    } <= recorded_actions
    assert len(recorded_actions) >= 35


def test_every_action_the_code_records_has_a_sentence(recorded_actions):
    missing = sorted(recorded_actions - set(SENTENCES))
    assert not missing, f"actions without a sentence in accounts/event_sentences.py: {missing}"


def test_metric_names_are_the_rules_metrics():
    assert dict(AlertRule.METRICS) == event_sentences.METRIC_NAMES


def test_object_names_are_of_real_models():
    labels = {model._meta.label_lower for model in apps.get_models()}
    assert set(OBJECT_NAMES) <= labels, set(OBJECT_NAMES) - labels


# --- pure sentences ----------------------------------------------------------------------


READER = Context(capabilities=roles.ROLE_CAPABILITIES[roles.COMPLIANCE_OFFICER])


def words(action, *, ctx=READER, **fields) -> str:
    sentence = describe(Facts(action, **fields), ctx)
    assert not sentence.generic
    return sentence.text()


def test_times_read_as_the_report_prints_them():
    search = {"model": "credit", "from": "2026-11-21T14:05:09+01:00", "score_min": 0.80125}
    text = words("decisions.searched", actor_name="alice", details={"params": search})

    assert f"from {formatting.moment('2026-11-21T13:05:09Z')}" in text
    assert "from 21 Nov 2026, 13:05 UTC" in text
    assert "score ≥ 0.80125" in text  # a search's parameters as the person typed them


def test_examples_read_as_the_issue_asks():
    search = {"model": "credit", "prediction": "bad", "from": "2026-11-21T00:00"}
    assert (
        words("decisions.searched", actor_name="alice", details={"params": search, "via": "page"})
        == "alice searched decisions of model credit (prediction = bad, from 21 Nov 2026)"
    )
    assert (
        words(
            "report.downloaded",
            actor_name="bob",
            object_type="reports.report",
            object_id="12",
            details={"kind": "model_compliance", "format": "pdf", "model": "credit", "version": 3},
        )
        == "bob downloaded compliance report 12 on credit v3 (PDF)"
    )
    assert (
        words(
            "alert.acknowledged",
            actor_name="carol",
            object_type="monitoring.alert",
            object_id="5",
            model="credit",
        )
        == "carol acknowledged alert 5 on credit"
    )
    assert (
        words(
            "feedback.submitted",
            actor_name="dave",
            object_type="decisions.decision",
            object_id="1234",
            details={"verdict": "disagree", "feedback_id": 3},
        )
        == "dave gave feedback on decision 1234 (disagrees)"
    )
    assert words("auth.login", actor_name="eve") == "eve logged in"
    assert words("auth.login_failed", actor_name="x") == "an unknown user failed to log in as 'x'"


def test_an_unknown_action_or_odd_details_give_a_generic_sentence_not_an_error():
    new = describe(
        Facts("widget.frobbed", "monitoring.metricsnapshot", "13", {"a": {"b": 1}}, "zed"), READER
    )
    assert new.generic
    assert new.text() == "zed: widget frobbed (metric snapshot 13)"
    odd = describe(Facts("decisions.ingested", details={"ids": "garbage", "created": 2}), READER)
    assert odd.text()  # said as well as it can be, whatever the shape
    for action in SENTENCES:
        assert describe(Facts(action), READER).text()  # no details at all
        assert describe(Facts(action, "x.y", "not-a-number", {"x": None}, ""), READER).text()


def test_without_a_context_a_sentence_is_plain_text_with_no_link():
    plain = describe(Facts("decision.viewed", "decisions.decision", "7", {"via": "api"}, "ann"))
    assert plain.links == []
    assert plain.__html__() == plain.text() == "ann viewed decision 7 through the API"


def test_the_raw_details_are_key_value_lines_with_json_for_nested_values():
    lines = detail_lines({"via": "page", "params": {"model": "credit"}, "ok": True, "n": None})
    assert lines == [
        ("via", "page"),
        ("params", '{"model": "credit"}'),
        ("ok", "true"),
        ("n", "null"),
    ]


# --- a log with every event type ------------------------------------------------------------


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def own_cache(settings):
    """Sign-in and token failures counted in a cache of this test's own."""
    settings.CACHES = {
        "default": {**django_settings.CACHES["default"], "KEY_PREFIX": f"t-{uuid.uuid4().hex}"}
    }


@pytest.fixture
def log(
    own_cache,
    settings,
    tmp_path,
    admin,
    ml_engineer,
    compliance_officer,
    domain_expert,
    auditor,
    model_version,
    ingest,
):
    """Every action the code records, each through its own code path."""
    settings.ATTEST_MONITORING_MIN_DRIFT_DECISIONS = 40
    settings.ATTEST_TOKEN_FAILURE_LIMIT = 2
    officer, engineer = roles.Actor(user=compliance_officer), roles.Actor(user=ml_engineer)
    expert = roles.Actor(user=domain_expert)

    # Sign-in: a login, a logout, failures, a lockout, tokens refused, a 403.
    client = Client()
    client.post("/accounts/login/", {"username": "compliance_officer", "password": PASSWORD})
    client.post("/accounts/logout/")
    Client().post("/accounts/login/", {"username": "nobody", "password": "x"})
    for _ in range(django_settings.AXES_FAILURE_LIMIT):
        wrong = {"username": "auditor", "password": "wrong"}
        Client().post("/accounts/login/", wrong, REMOTE_ADDR="192.0.2.9")
    guesser = APIClient(REMOTE_ADDR="192.0.2.40")
    for n in range(3):
        guesser.credentials(HTTP_AUTHORIZATION=f"Token att_guess{n}")
        guesser.get("/api/v1/decisions")
    denied = APIClient()
    denied.force_authenticate(domain_expert)
    assert denied.get("/api/v1/audit/events").status_code == 403

    # Single sign-on: refused (no group maps to a role), failed (a bad ID token); a role
    # changed; two factors enrolled, a wrong code, a good one, the device reset.
    refused = SignOn("https://idp.bank.example", "s-1", "mallory", "", ("canteen",), (), "Bank IdP")
    sign_on(refused, ip="192.0.2.7")
    record_sso_failure("InvalidSignatureError: bad", provider="Bank IdP", ip="192.0.2.7")
    zoe = create_user("zoe", roles.AUDITOR)
    set_roles(zoe, [roles.AUDITOR, roles.DOMAIN_EXPERT], actor=roles.Actor(user=admin))
    totp = pyotp.TOTP(base64.b32encode(two_factor.pending_device(admin).bin_key).decode())
    two_factor.confirm_device(admin, totp.now())
    two_factor.verify_code(admin, totp.at(time.time() + totp.interval))
    two_factor.verify_code(admin, f"{(int(totp.now()) + 1) % 1_000_000:06d}")
    two_factor.reset_devices(admin, actor=roles.system_actor())

    # Tokens, stages, decisions, outcomes, an import.
    token, _ = create_api_token(ml_engineer, scopes=["read"], model_names=["credit"], actor=officer)
    revoke_api_token(token, actor=officer)
    change_stage(engineer, model_version, "production")
    change_traffic(engineer, model_version.registered_model, {"production": "1"})
    # Four-eyes: on; leaving production asked for and rejected; turning it off approved.
    set_four_eyes(engineer, model_version.registered_model, True)
    leaving = change_stage(engineer, model_version, "archived")
    approvals.reject(officer, leaving.pk, "keep it")
    turning_off = set_four_eyes(engineer, model_version.registered_model, False)
    approvals.approve(officer, turning_off.pk)
    ids = [r["id"] for r in ingest(*DecisionPayloadFactory.build_batch(40))]
    decision = Decision.objects.get(pk=ids[0])
    record_outcomes(
        engineer,
        {"outcomes": [{"decision_id": ids[1], "outcome": "bad", "observed_at": now().isoformat()}]},
    )
    path = tmp_path / "decisions.csv"
    write_csv(path, DecisionPayloadFactory.build_batch(2))
    import_decisions(engineer, path, model_version)

    # Reading decisions: a view, a search (one filter on a sensitive feature), an export.
    reader = browser(compliance_officer)
    reader.get(f"/decisions/{decision.pk}/")
    search = {"model": "credit", "prediction": "bad", "from": "2026-11-21T00:00"}
    reader.get("/decisions/", search)
    # exact: a sensitive feature is encrypted, searched through its blind index only
    reader.get("/decisions/", {"model": "credit", "feature.income": "44000"})
    b"".join(reader.get("/decisions/export.csv", {"model": "credit"}).streaming_content)
    request_explanations(officer, decision, ["shap"])
    run_what_if(officer, decision, {"inputs": {"debt_ratio": 0.25, "income": 1000.0}}, via="page")
    declined = Decision.objects.filter(pk__in=ids, prediction="bad").order_by("pk").first()
    request_counterfactuals(officer, declined)

    # Oversight: feedback, a flag, the case taken and overridden, labelled data.
    submit_feedback(expert, decision, {"verdict": "disagree"})
    case = flag_decision(expert, decision, "Looks wrong")
    take_case(expert, case)
    resolve_case(expert, case, "overridden", outcome="good", rationale="The income was misread.")
    export_labelled(engineer, model_version, "csv")

    # Monitoring: settings, a window computed that breaches a rule, its alert's life.
    configure_monitoring(engineer, model_version, {"favourable_class": "good"})
    day = windows.window_floor("day", decision.predicted_at)
    AlertRule.objects.create(
        name="Always", metric="score_drift_psi", comparison="gte", threshold=-1.0,
        model_version=model_version,
    )  # fmt: skip
    period = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
    snapshot = snapshots.request_snapshot(engineer, model_version, period)
    snapshots.compute_snapshot(snapshot.pk)
    alert = Alert.objects.get(rule__name="Always")
    alerts.acknowledge_alert(officer, alert)
    alerts._resolve(alert, 0.01)

    # Reports: a compliance report requested, made and downloaded; a notice requested
    # (recorded as request_report does: a notice needs computed explanations).
    body = {
        "kind": Report.COMPLIANCE,
        "model": "credit",
        "version": "1",
        "from": "2026-01-01",
        "to": "2026-01-08",
        "format": "json",
    }
    report = reports.generate_report(reports.request_report(officer, body, via="page").pk)
    reports.download_report(officer, report, via="page")
    notice = Report.objects.create(
        kind=Report.NOTICE,
        format="pdf",
        parameters={"decision_id": decision.pk},
        registered_model=model_version.registered_model,
        model_version=model_version,
        decision=decision,
        requested_by=compliance_officer,
    )
    record_event(
        "report.requested",
        actor=officer,
        target=notice,
        via="page",
        kind=Report.NOTICE,
        format="pdf",
        model="credit",
        version="1",
        decision_id=decision.pk,
    )

    # A feature index built and dropped (PostgreSQL's, built outside a transaction:
    # recorded as create_feature_index and drop_feature_index record it).
    for action in ("search_index.created", "search_index.dropped"):
        record_event(
            action,
            actor=roles.system_actor(),
            model="credit",
            feature="income",
            index=f"decisions_feature_{model_version.registered_model_id}_0123456789ab",
        )

    # A month retired (recorded as retire_month records it: retiring this test's own
    # decisions would leave the log's other events without their objects).
    record_event(
        "decisions.retired",
        actor=roles.system_actor(),
        object_type="retirement",
        object_id="1",
        via="command",
        month="2026-01",
        declaration=1,
        mode="detach",
        rows={"decisions_decision": 1234, "decisions_outcome": 5, "reviews_feedback": 2},
        partitions={"decisions_decision_p202601": "decisions_decision_p202601_retired"},
    )

    # Privacy (issue 20): recorded as the code records them (their own tests run the
    # real paths: tests/decisions/test_erasure.py, tests/reports/test_subject_requests.py).
    system = roles.system_actor()
    record_event(
        "decisions.erased",
        actor=system,
        object_type="erasure",
        object_id="3",
        via="command",
        cause="retention",
        decisions=12,
    )
    for action in ("legal_hold.placed", "legal_hold.released"):
        record_event(
            action,
            actor=system,
            object_type="decisions.legalhold",
            object_id="4",
            via="api",
            model="credit",
            subject_ref="c-1",
        )
    record_event(
        "retention.set",
        actor=system,
        object_type="registry.registeredmodel",
        object_id="1",
        via="api",
        days=30,
        duty_days=None,
    )
    record_event(
        "retention.previewed",
        actor=system,
        object_type="retention",
        via="api",
        models={"credit": 5},
    )
    record_event(
        "subject_request.filed",
        actor=system,
        object_type="reports.subjectrequest",
        object_id="5",
        via="api",
        kind="erasure",
        subject_ref="c-1",
        status="refused",
    )
    record_event(
        "subject_request.downloaded",
        actor=system,
        object_type="reports.subjectrequest",
        object_id="5",
        via="api",
        format="pdf",
        subject_ref="c-1",
        decisions=2,
    )
    # Data keys rotated (recorded as rotate_data_keys records them).
    record_event(
        "data_keys.rotation_started", actor=roles.system_actor(), key_id="k2", pending=1200
    )
    record_event(
        "data_keys.rotation_finished",
        actor=roles.system_actor(),
        key_id="k2",
        reencrypted=1000,
        batches=1,
        left=200,
    )

    # The log itself: sealed, a seal downloaded, the chain verified, the log read.
    seal_new_records()
    reader.get("/audit/seal.json")
    verify_as(officer, via="page")
    reader.get("/audit/", {"action": "decision."})
    b"".join(reader.get("/audit/events.csv").streaming_content)

    return {
        "decision": decision,
        "declined": declined,
        "case": case,
        "alert": alert,
        "report": report,
        "notice": notice,
        "snapshot": snapshot,
        "tree_size": latest_seal().tree_size,
        "ingested": ids,
    }


def sentences(**filters) -> dict[str, list[str]]:
    """The plain sentences of the events, by action."""
    events = list(AuditEvent.objects.filter(**filters).order_by("id"))
    found: dict[str, list[str]] = {}
    for event, sentence in zip(events, describe_events(events), strict=True):
        assert not sentence.generic, event.action
        found.setdefault(event.action, []).append(sentence.text())
    return found


def test_the_log_holds_every_action_and_each_reads_as_its_sentence(log, recorded_actions):
    said = sentences()
    assert set(said) == recorded_actions  # the log of this test has every event type
    d, case, alert, report = log["decision"], log["case"], log["alert"], log["report"]
    expected = {
        "auth.login": "compliance_officer logged in",
        "auth.logout": "compliance_officer logged out",
        "auth.login_failed": "an unknown user failed to log in as 'nobody'",
        "auth.locked_out": (
            f"signing in as 'auditor' from 192.0.2.9 was locked for "
            f"{int(django_settings.AXES_COOLOFF_TIME.total_seconds()) // 60} minutes "
            f"after {django_settings.AXES_FAILURE_LIMIT} failed attempts"
        ),
        "access.denied": (
            "domain_expert was refused GET /api/v1/audit/events: "
            "Your role does not allow this (read_audit)"
        ),
        "token.revoked": f"compliance_officer revoked API token {log_token()} of ml_engineer",
        "model_version.stage_changed": "ml_engineer moved credit v1 from staging to production",
        "model.four_eyes_changed": "ml_engineer turned four-eyes approvals off for model credit",
        "approval.requested": (
            "ml_engineer asked for a second person's approval on credit: "
            "v1: production → archived (request "
        ),
        "approval.rejected": (
            "compliance_officer rejected ml_engineer's request {} on credit: "
            "v1: production → archived (why: keep it)"
        ),
        "approval.approved": (
            "compliance_officer approved ml_engineer's request {} on credit: "
            "four-eyes approvals: on → off"
        ),
        "model.traffic_changed": (
            "ml_engineer set the first traffic policy of model credit: production v1, "
            "canary none, shadow none, enabled on, fallback none"
        ),
        "decision.viewed": f"compliance_officer viewed decision {d.pk}",
        "decision.explain_requested": (
            f"compliance_officer asked for new explanations of decision {d.pk} (SHAP)"
        ),
        "decision.what_if": (
            f"compliance_officer tried a what-if on decision {d.pk} "
            f"(income [masked] \u2192 [masked] and debt_ratio {d.inputs['debt_ratio']} \u2192 0.25)"
        ),
        "decision.counterfactuals_requested": (
            f"compliance_officer asked for the counterfactuals of decision "
            f"{log['declined'].pk} again"
        ),
        "feedback.submitted": f"domain_expert gave feedback on decision {d.pk} (disagrees)",
        "review.flagged": (
            f"domain_expert flagged decision {d.pk} for review (review case {case.pk})"
        ),
        "review.taken": f"domain_expert took review case {case.pk} of decision {d.pk}",
        "review.resolved": (
            f"domain_expert resolved review case {case.pk} of decision {d.pk}: "
            "overridden, the outcome is now 'good'"
        ),
        "alert.acknowledged": f"compliance_officer acknowledged alert {alert.pk} on credit",
        "alert.resolved": (
            f"system (monitoring) resolved alert {alert.pk} on credit: back within bounds at 0.01"
        ),
        "report.downloaded": f"compliance_officer downloaded compliance report {report.pk} on "
        "credit v1 (JSON)",
        "seal.exported": (
            f"compliance_officer downloaded the seal at tree size {log['tree_size']:,}"
        ),
        "decisions.imported": (
            "ml_engineer imported decisions.csv into credit v1 "
            "(2 new decisions, 0 duplicates, 0 rejected)"
        ),
        "models.assigned": "someone assigned user domain_expert to model credit",
        "auth.sso_refused": (
            "signing in as 'mallory' through Bank IdP was refused: none of the provider's "
            "groups (canteen) maps to an Attest role"
        ),
        "auth.sso_failed": (
            "a sign-in through Bank IdP from 192.0.2.7 failed: InvalidSignatureError: bad"
        ),
        "user.roles_changed": (
            "admin changed the roles of user zoe: from auditor to auditor and domain_expert"
        ),
        "two_factor.enrolled": "admin enrolled a TOTP device for two-factor sign-in",
        "two_factor.verified": "admin gave a good two-factor code",
        "two_factor.failed": "admin gave a wrong two-factor code, 1 wrong code in a row",
        "two_factor.reset": (
            "system (manage.py) reset the two-factor devices of user admin (1 device removed)"
        ),
        "user.created": "someone created user auditor (role auditor)",
    }
    first, second = Approval.objects.order_by("pk")
    expected["approval.rejected"] = expected["approval.rejected"].format(first.pk)
    expected["approval.approved"] = expected["approval.approved"].format(second.pk)
    assert said["approval.requested"][0].startswith(expected.pop("approval.requested"))
    for action, sentence in expected.items():
        assert sentence in said[action], (action, said[action])
    assert (
        "compliance_officer searched decisions of model credit (prediction = bad, from 21 Nov 2026)"
    ) in said["decisions.searched"]
    assert (
        "compliance_officer searched decisions of model credit (income = [masked])"
        in said["decisions.searched"]
    )
    assert said["decisions.exported"] == [
        "compliance_officer exported decisions of model credit as CSV"
    ]
    batch, imported = log["ingested"], sorted(set(Decision.objects.values_list("pk", flat=True)))
    imported = [pk for pk in imported if pk > max(batch)]
    assert said["decisions.ingested"][-2:] == [
        f"ml_engineer recorded 40 decisions of model credit through the API "
        f"(ids {min(batch)}\u2013{max(batch)})",
        f"ml_engineer recorded 2 decisions of model credit from an import "
        f"(ids {imported[0]}\u2013{imported[1]})",
    ]
    assert said["outcomes.recorded"] == [
        "ml_engineer recorded 1 outcome of model credit through the API"
    ]
    assert said["chain.verified"][0].startswith("compliance_officer verified the chain: it held (")
    assert said["chain.verified"][0].endswith(" audit events and 1 seal)")
    assert (
        f"system (monitoring) raised alert {alert.pk} on credit: score drift (PSI) at "
        f"{event_sentences.figure(alert.value)} (metric snapshot {log['snapshot'].pk})"
    ) in said["alert.raised"]
    assert said["audit_log.viewed"] == [
        "compliance_officer read the access log (action decision.*)"
    ]
    assert said["audit_log.exported"] == ["compliance_officer downloaded the access log as CSV"]
    assert said["search_index.created"] == [
        "system (manage.py) indexed feature income of model credit"
    ]
    assert said["decisions.retired"] == [
        "system (manage.py) retired 1,234 decisions predicted in 2026-01 and 7 rows referring "
        "to them, by declaration #1 from the command line"
    ]
    assert said["data_keys.rotation_started"] == [
        "system (manage.py) began re-encrypting 1,200 decisions' sensitive inputs under data key k2"
    ]
    assert said["data_keys.rotation_finished"] == [
        "system (manage.py) re-encrypted 1,000 decisions' sensitive inputs under data key k2 "
        "in 1 batch, 200 left"
    ]
    assert said["search_index.dropped"] == [
        "system (manage.py) dropped the index on feature income of model credit"
    ]
    start = log["snapshot"].window_start
    assert said["monitoring.requested"] == [
        f"ml_engineer asked for the day metrics of credit v1 from {start.day} {start:%b %Y} "
        f"to {(start + timedelta(days=1)).day} {start + timedelta(days=1):%b %Y} "
        f"(metric snapshot {log['snapshot'].pk})"
    ]
    assert said["monitoring.configured"] == [
        "ml_engineer changed the monitoring settings of credit v1: favourable class none → good"
    ]
    assert said["labelled_data.exported"] == [
        "ml_engineer exported 2 labelled decisions of credit v1 as CSV"
    ]
    assert said["model_version.registered"] == ["ml_engineer registered credit v1 (skops artifact)"]
    assert said["token.created"] == [
        f"compliance_officer created API token {log_token()} for ml_engineer "
        "(scopes read, limited to credit)"
    ]
    assert said["auth.token_locked_out"] == [
        "API tokens from 192.0.2.40 were blocked for 10 minutes "
        "after 2 failed token authentications"
    ]
    assert said["report.requested"] == [
        f"compliance_officer requested compliance report {report.pk} on credit v1 "
        "(JSON, from 1 Jan 2026 to 8 Jan 2026)",
        f"compliance_officer requested decision notice {log['notice'].pk} "
        f"for decision {d.pk} (PDF)",
    ]


def log_token() -> str:
    return AuditEvent.objects.filter(action="token.revoked").get().object_id


def test_the_page_shows_sentences_with_links_and_the_raw_details_behind_a_toggle(
    log, compliance_officer
):
    page = browser(compliance_officer).get("/audit/", {"limit": "500"})
    assert page.status_code == 200
    content = page.content.decode()
    rows = page.context["events"]
    assert len(rows) == AuditEvent.objects.count() - 1  # all but this reading of the log
    for event in rows:
        assert event.sentence.__html__() in content
    assert content.count("<details>") == len(rows)
    assert content.count('<dl class="facts">') == sum(1 for e in rows if e.details)
    for link in (
        f'href="/decisions/{log["decision"].pk}/"',
        f'href="/decisions/{log["decision"].pk}/#review"',
        'href="/models/credit/versions/1/"',
        'href="/models/credit/versions/1/monitoring/"',
        f'href="/reports/?kind=compliance#report-{log["report"].pk}"',
        f'href="/reports/?kind=notice#report-{log["notice"].pk}"',
        'href="/monitoring/#alerts"',
        f'href="/api/v1/audit/seals/{log["tree_size"]}"',
        'href="/audit/?action=decision."',
        'href="/decisions/?from=2026-11-21T00%3A00&amp;model=credit&amp;prediction=bad"',
    ):
        assert link in content, link
    # Python's reprs and the raw object types are gone.
    assert "{'" not in content
    assert "monitoring.metricsnapshot" not in content
    assert "registry.modelversion" not in content
    # The raw details, behind the toggle: each key, JSON for a nested value.
    assert "<summary><code>feedback.submitted</code></summary>" in content
    assert "<dt>verdict</dt><dd>disagree</dd>" in content
    assert "<dt>params</dt><dd>{&quot;model&quot;: &quot;credit&quot;" in content
    # Every link of a sentence opens a page that answers.
    client = browser(compliance_officer)
    for url in {ref.url.split("#")[0] for event in rows for ref in event.sentence.links}:
        assert client.get(url).status_code == 200, url


def test_a_reader_without_the_capability_gets_no_link(log, auditor):
    content = browser(auditor).get("/audit/", {"limit": "500"}).content.decode()

    assert f'href="/reports/?kind=notice#report-{log["notice"].pk}"' not in content  # no notices
    assert f"decision notice {log['notice'].pk}" in content  # named all the same
    assert f'href="/reports/?kind=compliance#report-{log["report"].pk}"' in content
    assert f'href="/decisions/{log["decision"].pk}/"' in content


def test_a_masked_search_value_stays_masked_in_the_sentences(
    log, auditor, compliance_officer, api_client
):
    api_client(compliance_officer).get(
        "/api/v1/decisions", {"model": "credit", "feature.income": "44000"}
    )
    for user in (auditor, compliance_officer):
        client = browser(user)
        content = client.get("/audit/", {"action": "decisions."}).content.decode()
        assert "income = [masked]" in content
        assert "44000" not in content and "44,000" not in content
        download = client.get("/audit/events.csv", {"action": "decisions."})
        rows = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))
        assert all("44000" not in row["summary"] for row in rows)
        assert any("income = [masked]" in row["summary"] for row in rows)
        # The sensitive column is as before: its values to view_sensitive alone.
        opened = any("44000" in row["sensitive_details"] for row in rows)
        assert opened == (user == compliance_officer)
    # No link repeats a search with a masked value.
    assert "feature.income=%5Bmasked%5D" not in content


def test_the_csv_keeps_its_columns_and_adds_the_summary_last(log, compliance_officer):
    download = browser(compliance_officer).get("/audit/events.csv", {"action": "feedback."})
    rows = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode())))

    assert rows[0] == list(CSV_COLUMNS)
    assert CSV_COLUMNS[:-1] == (
        "id",
        "at",
        "actor",
        "action",
        "object_type",
        "object_id",
        "ip",
        "details",
        "sensitive_details",
        "content_hash",
    )
    feedback = f"domain_expert gave feedback on decision {log['decision'].pk} (disagrees)"
    assert rows[1][-1] == feedback
