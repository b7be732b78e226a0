"""The access log in words: one sentence per audit event, its objects named for people.

"alice searched decisions of model credit (prediction = bad, from 21 Nov 2026)",
"carol acknowledged alert 5 on credit", "an unknown user failed to log in as 'x'".

Pure functions over what an event holds (actor name, action, object type and id,
details, the model it concerns, the address): no query, no import of an app above
this floor. `SENTENCES` holds one function per action the code records
(tests/decisions/test_event_sentences.py finds every `record_event` action in the
code and fails on one without a sentence); an action it does not know (a new one,
or an old one no longer recorded) still gets a generic sentence, never an error.

The objects an event names are links where a page for them exists and the reader
may open it. Who the reader is, and the names only the database knows (a model
version's name and version, a user's name), come in a `Context`, which the page
fills for a page of events at a time (decisions/audit_pages.py); the CSV's
`summary` column is the same sentence as plain text.

What a sentence says comes only from the event's `details`, never from its
`sensitive_details`: a masked value stays "[masked]" whoever reads it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.urls import NoReverseMatch, reverse
from django.utils.html import conditional_escape, format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe

from auditapp import formatting
from auditapp.accounts import roles

log = logging.getLogger(__name__)


# --- what a sentence is made of ---------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """An object an event names: its human name, and the page to open it (if any)."""

    label: str
    url: str | None = None


Part = str | Ref


@dataclass(frozen=True)
class Sentence:
    """Text and links; `str()` is the plain text, templates render the links."""

    parts: tuple[Part, ...]
    generic: bool = False  # no sentence of its own: built from the action and the object

    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.label for p in self.parts)

    def __str__(self) -> str:
        return self.text()

    @property
    def html(self) -> SafeString:
        """For templates (`{{ e.sentence.html }}`): they call str() before escaping."""
        return mark_safe(self.__html__())  # noqa: S308 (every part escaped by __html__)

    def __html__(self) -> str:
        html = []
        for part in self.parts:
            if isinstance(part, str):
                html.append(str(conditional_escape(part)))
            elif part.url:
                html.append(str(format_html('<a href="{}">{}</a>', part.url, part.label)))
            else:
                html.append(str(conditional_escape(part.label)))
        return "".join(html)

    @property
    def links(self) -> list[Ref]:
        return [p for p in self.parts if isinstance(p, Ref) and p.url]


@dataclass(frozen=True)
class Facts:
    """What a sentence is built from: an AuditEvent's fields, or the same given by hand."""

    action: str
    object_type: str = ""
    object_id: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    actor_name: str = ""
    model: str = ""  # the registered model the event concerns (AuditEvent.model)
    ip: str | None = None

    @classmethod
    def of(cls, event: Any) -> Facts:
        details = event.details
        return cls(
            action=event.action or "",
            object_type=event.object_type or "",
            object_id=str(event.object_id or ""),
            details=details if isinstance(details, dict) else {"details": details},
            actor_name=event.actor_name or "",
            model=getattr(event, "model", "") or "",
            ip=getattr(event, "ip", None),
        )


@dataclass(frozen=True)
class Context:
    """Who reads (their capabilities decide the links) and the names looked up for a page.

    `versions`: model version id -> (model name, version); `users`: user id -> user
    name. The default context links nothing and knows no names: plain text.
    """

    capabilities: frozenset[str] = frozenset()
    versions: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    users: Mapping[str, str] = field(default_factory=dict)

    # The paths reversed so far (reverse() costs ~60 µs; a page names the same pages often).
    paths: dict[tuple, str | None] = field(default_factory=dict, compare=False, repr=False)

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def url(self, allowed: bool, url_name: str, anchor: str = "", /, **kwargs: Any) -> str | None:
        """A page's URL by its name, if the reader may open it (has what its view asks for)."""
        if not allowed:
            return None
        key = (url_name, *sorted(kwargs.items()))
        if key not in self.paths:
            try:
                self.paths[key] = reverse(url_name, kwargs=kwargs or None)
            except NoReverseMatch:  # an id or name the URL pattern does not take
                self.paths[key] = None
        path = self.paths[key]
        return path + anchor if path else None


PLAIN = Context()

# The names looked up for a page of events: object type -> what the Context maps.
VERSION_TYPE, USER_TYPE = "registry.modelversion", "auth.user"


def ids_to_look_up(events: Iterable[Any]) -> dict[str, set[str]]:
    """The model version and user ids a page of events names, for the Context's lookups."""
    wanted: dict[str, set[str]] = {VERSION_TYPE: set(), USER_TYPE: set()}
    for event in events:
        if event.object_type in wanted and str(event.object_id).isdigit():
            wanted[event.object_type].add(str(event.object_id))
    return wanted


# --- the objects, named and linked --------------------------------------------------

# Object types (app_label.model) as people call them; an unknown one is its model's name.
OBJECT_NAMES = {
    "accounts.apitoken": "API token",
    "auth.user": "user",
    "decisions.decision": "decision",
    "decisions.legalhold": "legal hold",
    "reports.subjectrequest": "subject request",
    "decisions.outcome": "outcome",
    "decisions.seal": "seal",
    "decisions.verificationjob": "verification job",
    "explain.explanation": "explanation",
    "monitoring.alert": "alert",
    "monitoring.alertrule": "alert rule",
    "monitoring.metricsnapshot": "metric snapshot",
    "monitoring.monitoringsettings": "monitoring settings",
    "otp_totp.totpdevice": "TOTP device",
    "registry.modelversion": "model version",
    "registry.registeredmodel": "model",
    "registry.stagechange": "stage change",
    "reports.report": "report",
    "reviews.caseevent": "review case event",
    "reviews.feedback": "feedback",
    "reviews.override": "override",
    "reviews.reviewcase": "review case",
}

REPORT_KINDS = {"model_compliance": "compliance report", "decision_notice": "decision notice"}
# The report list's ?kind= for each kind (reports/views.py KINDS).
REPORT_LIST_KINDS = {"model_compliance": "compliance", "decision_notice": "notice"}

# AlertRule.METRICS (monitoring/models.py), which this floor may not import; a test
# keeps the two equal.
METRIC_NAMES = {
    "input_drift_psi": "input drift (PSI)",
    "score_drift_psi": "score drift (PSI)",
    "attribution_ndcg": "attribution ranking agreement (NDCG)",
    "disparate_impact_ratio": "disparate impact ratio",
    "demographic_parity_difference": "demographic parity difference",
    "equalized_odds_difference": "equalised-odds difference",
    "roc_auc": "ROC AUC",
    "roc_auc_drop": "ROC AUC drop vs the reference",
    "accuracy": "accuracy",
    "brier": "Brier score",
    "explanation_failure_rate": "explanation failure rate",
}

METHOD_NAMES = {"shap": "SHAP", "lime": "LIME"}
FORMAT_NAMES = {"pdf": "PDF", "csv": "CSV", "json": "JSON", "parquet": "Parquet"}


def object_name(object_type: str) -> str:
    if object_type in OBJECT_NAMES:
        return OBJECT_NAMES[object_type]
    return object_type.rpartition(".")[2].replace("_", " ")


def _id(value: Any) -> str:
    return str(value) if value not in (None, "") else ""


def decision_ref(ctx: Context, decision_id: Any) -> Ref:
    decision_id = _id(decision_id)
    url = None
    if decision_id.isdigit():
        url = ctx.url(
            ctx.can(roles.READ_DECISIONS), "decision-detail", decision_id=int(decision_id)
        )
    return Ref(f"decision {decision_id}".strip(), url)


def version_ref(
    ctx: Context, pk: Any = None, *, model: Any = "", version: Any = "", page: str = "model-version"
) -> Ref:
    """A version as 'credit v3', linked to its page (or its monitoring page), or by its id."""
    known = ctx.versions.get(_id(pk))
    if known:
        model, version = known
    if model and version not in (None, ""):
        url = ctx.url(ctx.can(roles.READ_MODELS), page, name=str(model), version=str(version))
        return Ref(f"{model} v{version}", url)
    if model:
        return Ref(f"a version of {model}" + (f" (id {pk})" if _id(pk) else ""))
    return Ref(f"model version {pk}" if _id(pk) else "a model version")


def user_ref(ctx: Context, pk: Any) -> Ref:
    """'user bob' (no page: the Django admin is not for every reader of the log)."""
    name = ctx.users.get(_id(pk))
    return Ref(f"user {name}" if name else (f"user #{pk}" if _id(pk) else "a user"))


def report_ref(ctx: Context, pk: Any, kind: Any) -> Ref:
    label = f"{REPORT_KINDS.get(str(kind), 'report')} {_id(pk)}".strip()
    if kind == "decision_notice" and not all(ctx.can(c) for c in roles.EXPORT_NOTICES):
        return Ref(label)  # a notice is not even listed for those who may not export one
    query = f"?kind={REPORT_LIST_KINDS[kind]}" if kind in REPORT_LIST_KINDS else ""
    return Ref(
        label, ctx.url(ctx.can(roles.EXPORT_REPORTS), "report-list", f"{query}#report-{_id(pk)}")
    )


def alert_ref(ctx: Context, pk: Any) -> Ref:
    return Ref(
        f"alert {_id(pk)}".strip(), ctx.url(ctx.can(roles.READ_MODELS), "monitoring", "#alerts")
    )


def seal_ref(ctx: Context, tree_size: Any, pk: Any = "") -> Ref:
    if isinstance(tree_size, int):
        readers = ctx.can(roles.VERIFY_CHAIN) or ctx.can(roles.READ_DECISIONS)  # sealing.py
        url = ctx.url(readers, "api-seal", tree_size=tree_size)
        return Ref(f"the seal at tree size {tree_size:,}", url)
    return Ref(f"seal {pk}" if _id(pk) else "a seal")


def object_ref(ctx: Context, facts: Facts) -> Ref | None:
    """The event's own object, named (and linked) as its type allows; None if it has none."""
    kind, pk = facts.object_type, facts.object_id
    details = facts.details
    if not kind and not pk:
        return None
    if kind == "decisions.decision":
        return decision_ref(ctx, pk) if pk else Ref("decisions")
    if kind == VERSION_TYPE:
        return version_ref(ctx, pk, model=details.get("model") or facts.model)
    if kind == USER_TYPE:
        return user_ref(ctx, pk)
    if kind == "reports.report":
        return report_ref(ctx, pk, details.get("kind"))
    if kind == "monitoring.alert":
        return alert_ref(ctx, pk)
    if kind == "decisions.seal":
        return seal_ref(ctx, details.get("tree_size"), pk)
    return Ref(f"{object_name(kind)} {pk}".strip())


# --- words and figures --------------------------------------------------------------


def count(n: Any, noun: str, plural: str | None = None) -> str:
    """'1 decision', '2,000 decisions'."""
    if not isinstance(n, int | float) or isinstance(n, bool):
        return f"{n} {plural or noun + 's'}"
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"


def duration(seconds: Any) -> str:
    """'45 seconds', '15 minutes', '2 hours'."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return f"{seconds} seconds"
    if seconds < 120:
        return count(round(seconds), "second")
    if seconds < 7200:
        return count(round(seconds / 60), "minute")
    return count(round(seconds / 3600), "hour")


def listing(items: Iterable[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def moment(value: Any) -> str:
    """An ISO-8601 date or time as every page and report prints it: '21 Nov 2026' (midnight:
    a day) or '21 Nov 2026, 14:05 UTC'. Times without a zone are UTC, as the forms say."""
    when = formatting.as_moment(value) if isinstance(value, str) and value else None
    if when is None:
        return str(value)
    if when == when.replace(hour=0, minute=0, second=0, microsecond=0):
        return formatting.day(when)
    return formatting.moment(when)


def figure(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return formatting.number(value)
    return plain_value(value)


def plain_value(value: Any) -> str:
    """A detail's value as a reader reads it: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def detail_lines(details: Any) -> list[tuple[str, str]]:
    """An event's details as (key, value) lines: the raw view behind the page's toggle."""
    if not isinstance(details, dict):
        return [("details", plain_value(details))] if details not in (None, "") else []
    return [(str(key), plain_value(value)) for key, value in details.items()]


def period(start: Any, end: Any) -> str:
    if start and end:
        return f"from {moment(start)} to {moment(end)}"
    if start:
        return f"from {moment(start)}"
    if end:
        return f"until {moment(end)}"
    return ""


def in_brackets(*items: str) -> str:
    shown = [i for i in items if i]
    return f" ({', '.join(shown)})" if shown else ""


def channel(details: Mapping[str, Any]) -> str:
    """' through the API' / ' from the command line'; nothing for the pages."""
    return {"api": " through the API", "command": " from the command line"}.get(
        str(details.get("via", "")), ""
    )


def file_format(value: Any) -> str:
    return FORMAT_NAMES.get(str(value), str(value)) if value else ""


# The decision search's parameters as they read in a sentence (dossier/filters.py).
SEARCH_WORDS = {
    "version": "version {}",
    "prediction": "prediction = {}",
    "score_min": "score ≥ {}",
    "score_max": "score ≤ {}",
    "subject_ref": "subject {}",
    "top_reason": "top reason {}",
    "review": "review {}",
    "feedback": "feedback {}",
}
MASK = "[masked]"  # decisions/presenters.py: how the log keeps a withheld value
SEARCH_QUIET = {"model", "from", "to", "cursor", "ordering", "limit", "page", "order"}


def search_terms(params: Mapping[str, Any]) -> list[str]:
    """A search's filters as words, masked values left "[masked]" as the log keeps them."""
    terms = []
    for key, value in params.items():
        if key in SEARCH_QUIET or value in (None, "") or (key == "version" and params.get("model")):
            continue  # the model and its version name what was searched (search_ref)
        if key in SEARCH_WORDS:
            terms.append(SEARCH_WORDS[key].format(plain_value(value)))
        elif key == "has_outcome":
            terms.append("with an outcome" if value == "true" else "without an outcome")
        elif key.startswith("feature."):
            name, _, bound = key[len("feature.") :].partition("__")
            sign = {"gte": "≥", "lte": "≤"}.get(bound, "=")
            terms.append(f"{name} {sign} {plain_value(value)}")
        else:
            terms.append(f"{key} = {plain_value(value)}")
    if params.get("from"):
        terms.append(f"from {moment(params['from'])}")
    if params.get("to"):
        terms.append(f"before {moment(params['to'])}")  # the search's `to` is exclusive
    return terms


def search_ref(ctx: Context, params: Mapping[str, Any], noun: str = "decisions") -> Ref:
    """'decisions of model credit v2', linked to the same search (unless a value is masked)."""
    model, version = params.get("model"), params.get("version")
    label = noun
    if model:
        label += f" of model {model}" + (f" v{version}" if version else "")
    elif not search_terms(params):
        label = f"all {noun}"
    masked = any(v == MASK for v in params.values())
    query = sorted((k, v) for k, v in params.items() if isinstance(v, str) and k != "cursor")
    url = None if masked else ctx.url(ctx.can(roles.READ_DECISIONS), "decision-search")
    if url and query:
        url += "?" + urlencode(query)
    return Ref(label, url)


# --- the sentences, one per action ----------------------------------------------------

Build = Callable[["Event"], list[Part]]
SENTENCES: dict[str, Build] = {}


def sentence(*actions: str) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        for action in actions:
            SENTENCES[action] = build
        return build

    return register


@dataclass(frozen=True)
class Event:
    """What a sentence function reads: the facts, the context, and shorthands."""

    facts: Facts
    ctx: Context

    @property
    def d(self) -> Mapping[str, Any]:
        return self.facts.details

    @property
    def who(self) -> str:
        name = self.facts.actor_name or "someone"
        token = self.d.get("token")
        return f"{name} (token {token})" if token else name

    @property
    def obj(self) -> Ref:
        return object_ref(self.ctx, self.facts) or Ref("—")

    def version(self, *, page: str = "model-version") -> Ref:
        """The model version the event is about: its object, or the model and version named."""
        pk = self.facts.object_id if self.facts.object_type == VERSION_TYPE else None
        model = self.d.get("model") or self.facts.model
        return version_ref(self.ctx, pk, model=model, version=self.d.get("version"), page=page)

    @property
    def on_model(self) -> str:
        return f" on {self.facts.model}" if self.facts.model else ""


# Sign-in


@sentence("auth.login")
def _login(e: Event) -> list[Part]:
    via = e.d.get("via")
    return [f"{e.who} logged in" + (f" through {via}" if via else "")]


@sentence("auth.logout")
def _logout(e: Event) -> list[Part]:
    return [f"{e.who} logged out"]


@sentence("auth.login_failed")
def _login_failed(e: Event) -> list[Part]:
    return [f"an unknown user failed to log in as '{e.facts.actor_name}'"]


@sentence("auth.locked_out")
def _locked_out(e: Event) -> list[Part]:
    """A username, or an address, locked (lockout.py): both named, as the event has both."""
    failures = e.d.get("failures")
    after = f" after {count(failures, 'failed attempt')}" if failures else ""
    where = f" from {e.facts.ip}" if e.facts.ip else ""
    lasting = f" for {duration(e.d['cooloff_seconds'])}" if e.d.get("cooloff_seconds") else ""
    return [f"signing in as '{e.facts.actor_name}'{where} was locked{lasting}{after}"]


SSO_REFUSALS = {
    "no_role": "none of the provider's groups{groups} maps to an Attest role",
    "inactive": "the Attest account is disabled",
    "name_taken": "an Attest account of that name exists and is not linked to the provider's",
}


@sentence("auth.sso_refused")
def _sso_refused(e: Event) -> list[Part]:
    groups = [str(g) for g in e.d.get("groups") or []]
    why = SSO_REFUSALS.get(str(e.d.get("reason")), str(e.d.get("reason") or "refused"))
    why = why.format(groups=f" ({listing(groups)})" if groups else "")
    provider = e.d.get("provider") or "single sign-on"
    return [f"signing in as '{e.facts.actor_name}' through {provider} was refused: {why}"]


@sentence("auth.sso_failed")
def _sso_failed(e: Event) -> list[Part]:
    where = f" from {e.facts.ip}" if e.facts.ip else ""
    reason = str(e.d.get("reason") or "").rstrip(".")
    provider = e.d.get("provider") or "single sign-on"
    return [f"a sign-in through {provider}{where} failed" + (f": {reason}" if reason else "")]


@sentence("two_factor.enrolled")
def _two_factor_enrolled(e: Event) -> list[Part]:
    return [f"{e.who} enrolled a TOTP device for two-factor sign-in"]


@sentence("two_factor.verified")
def _two_factor_verified(e: Event) -> list[Part]:
    return [f"{e.who} gave a good two-factor code"]


@sentence("two_factor.failed")
def _two_factor_failed(e: Event) -> list[Part]:
    when = " while enrolling" if e.d.get("enrolling") else ""
    throttled = " (too soon after the last wrong one: not checked)" if e.d.get("throttled") else ""
    failures = e.d.get("failures")
    run = f", {count(failures, 'wrong code')} in a row" if failures and not throttled else ""
    return [f"{e.who} gave a wrong two-factor code{when}{throttled}{run}"]


@sentence("two_factor.reset")
def _two_factor_reset(e: Event) -> list[Part]:
    devices = e.d.get("devices")
    removed = in_brackets(count(devices, "device") + " removed" if devices is not None else "")
    return [f"{e.who} reset the two-factor devices of ", e.obj, removed]


@sentence("auth.token_locked_out")
def _token_locked_out(e: Event) -> list[Part]:
    where = f" from {e.facts.ip}" if e.facts.ip else ""
    lasting = f" for {duration(e.d['blocked_seconds'])}" if e.d.get("blocked_seconds") else ""
    failures = e.d.get("failures")
    after = f" after {count(failures, 'failed token authentication')}" if failures else ""
    return [f"API tokens{where} were blocked{lasting}{after}"]


@sentence("access.denied")
def _denied(e: Event) -> list[Part]:
    request = " ".join(str(e.d[k]) for k in ("method", "path") if e.d.get(k))
    reason = str(e.d.get("reason") or "").rstrip(".")
    return [f"{e.who} was refused {request or 'a request'}" + (f": {reason}" if reason else "")]


# Users, tokens, assignments


@sentence("user.created")
def _user_created(e: Event) -> list[Part]:
    role = e.d.get("role")
    role_text = in_brackets(f"role {role}" if role else "")
    if e.d.get("via"):
        return [e.obj, f" was created at their first sign-in through {e.d['via']}", role_text]
    return [f"{e.who} created ", e.obj, role_text]


@sentence("user.roles_changed")
def _roles_changed(e: Event) -> list[Part]:
    def roles_text(key: str) -> str:
        return listing(str(r) for r in e.d.get(key) or []) or "no role"

    change = f" changed from {roles_text('before')} to {roles_text('after')}"
    if e.d.get("via"):
        return ["the roles of ", e.obj, change, f" by their groups at {e.d['via']}"]
    return [
        f"{e.who} changed the roles of ",
        e.obj,
        f": from {roles_text('before')} to {roles_text('after')}",
    ]


@sentence("models.assigned")
def _models_assigned(e: Event) -> list[Part]:
    models = [str(m) for m in e.d.get("models") or []]
    what = f"model {models[0]}" if len(models) == 1 else f"models {listing(models)}"
    return [f"{e.who} assigned ", e.obj, f" to {what}" if models else " to no model"]


@sentence("token.created")
def _token_created(e: Event) -> list[Part]:
    scopes, models = e.d.get("scopes") or [], e.d.get("models") or []
    return [
        f"{e.who} created API token {e.facts.object_id} for {e.d.get('owner', 'a user')}",
        in_brackets(
            f"scopes {listing(scopes)}" if scopes else "",
            f"limited to {listing(models)}" if models else "",
        ),
    ]


@sentence("token.revoked")
def _token_revoked(e: Event) -> list[Part]:
    return [f"{e.who} revoked API token {e.facts.object_id} of {e.d.get('owner', 'a user')}"]


# The registry


@sentence("model_version.registered")
def _registered(e: Event) -> list[Part]:
    fmt = e.d.get("format")
    return [f"{e.who} registered ", e.version(), in_brackets(f"{fmt} artifact" if fmt else "")]


@sentence("model_version.stage_changed")
def _stage_changed(e: Event) -> list[Part]:
    approval = e.d.get("approval")
    return [
        f"{e.who} moved ",
        e.version(),
        f" from {e.d.get('from_stage') or 'no stage'} to {e.d.get('to_stage')}",
        in_brackets(f"approved in approval {approval}" if approval else ""),
    ]


@sentence("model.four_eyes_changed")
def _four_eyes_changed(e: Event) -> list[Part]:
    state = "on" if e.d.get("four_eyes") else "off"
    return [f"{e.who} turned four-eyes approvals {state} for model {e.facts.model or '?'}"]


# Four-eyes approvals


def _request_of(e: Event) -> str:
    """ "ml_engineer's request 5 on credit: v1: staging → production"."""
    by = e.d.get("requested_by")
    summary = e.d.get("summary")
    return f"{by + chr(39) + 's ' if by else ''}request {e.facts.object_id or '?'}{e.on_model}" + (
        f": {summary}" if summary else ""
    )


@sentence("approval.requested")
def _approval_requested(e: Event) -> list[Part]:
    summary = e.d.get("summary") or "a change"
    return [
        f"{e.who} asked for a second person's approval{e.on_model}: {summary} "
        f"(request {e.facts.object_id or '?'})"
    ]


@sentence("approval.approved")
def _approval_approved(e: Event) -> list[Part]:
    return [f"{e.who} approved {_request_of(e)}"]


@sentence("approval.rejected")
def _approval_rejected(e: Event) -> list[Part]:
    comment = e.d.get("comment")
    return [f"{e.who} rejected {_request_of(e)}", in_brackets(f"why: {comment}" if comment else "")]


@sentence("model.traffic_changed")
def _traffic_changed(e: Event) -> list[Part]:
    """Who changed which model's traffic policy, and what changed (before -> after)."""
    model = e.facts.model or "a model"
    verb = (
        "rolled back the traffic policy of"
        if e.d.get("change") == "rollback"
        else ("changed the traffic policy of")
    )
    before, after = e.d.get("before"), e.d.get("after")
    if not isinstance(after, dict):
        return [f"{e.who} {verb} model {model}"]
    if not isinstance(before, dict):
        return [f"{e.who} set the first traffic policy of model {model}: {_policy_text(after)}"]
    changed = [
        f"{name} {_arm_text(before.get(name))} \u2192 {_arm_text(after.get(name))}"
        for name in ("production", "canary", "shadow", "enabled", "fallback")
        if before.get(name) != after.get(name)
    ]
    return [f"{e.who} {verb} model {model}", in_brackets(", ".join(changed))]


def _policy_text(document: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{name} {_arm_text(document.get(name))}"
        for name in ("production", "canary", "shadow", "enabled", "fallback")
    )


def _arm_text(value: Any) -> str:
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        share = value.get("share")
        shown = f"{share:.0%}" if isinstance(share, int | float) else "?"
        return f"v{value.get('version')} at {shown}"
    if isinstance(value, list):
        return ", ".join(f"v{v}" for v in value)
    return f"v{value}"


# Decisions and outcomes


def _recorded(e: Event, noun: str) -> list[Part]:
    created, duplicates = e.d.get("created", 0), e.d.get("duplicates", 0)
    model = e.d.get("model") or e.facts.model
    of = f" of model {model}" if model else ""
    source = {"api": " through the API", "import": " from an import", "serving": " by serving"}.get(
        str(e.d.get("source")), f" (source {e.d['source']})" if e.d.get("source") else ""
    )
    runs = e.d.get("ids") or []
    if created == 1 and runs and runs[0][0] == runs[0][1]:
        parts: list[Part] = [f"{e.who} recorded ", decision_ref(e.ctx, runs[0][0]), of]
    else:
        parts = [f"{e.who} recorded {count(created, noun)}{of}"]
    shown = ", ".join(f"{a}" if a == b else f"{a}\u2013{b}" for a, b in runs[:3])
    ids = f"ids {shown}" + (", …" if len(runs) > 3 else "") if runs and created != 1 else ""
    already = f"{figure(duplicates)} already recorded" if duplicates else ""
    return [*parts, source, in_brackets(ids, already)]


@sentence("decisions.ingested")
def _ingested(e: Event) -> list[Part]:
    return _recorded(e, "decision")


@sentence("outcomes.recorded")
def _outcomes(e: Event) -> list[Part]:
    return _recorded(e, "outcome")


@sentence("decisions.imported")
def _imported(e: Event) -> list[Part]:
    return [
        f"{e.who} imported {e.d.get('file') or 'a file'} into ",
        e.version(),
        in_brackets(
            count(e.d.get("created", 0), "new decision"),
            count(e.d.get("duplicates", 0), "duplicate"),
            f"{figure(e.d.get('rejected', 0))} rejected",
        ),
    ]


@sentence("decision.viewed")
def _viewed(e: Event) -> list[Part]:
    return [f"{e.who} viewed ", e.obj, channel(e.d)]


@sentence("decision.explain_requested")
def _explain_requested(e: Event) -> list[Part]:
    methods = [METHOD_NAMES.get(str(m), str(m)) for m in e.d.get("methods") or []]
    return [f"{e.who} asked for new explanations of ", e.obj, in_brackets(listing(methods))]


@sentence("decision.what_if")
def _what_if(e: Event) -> list[Part]:
    changes = e.d.get("changes")
    tried = []
    for change in changes if isinstance(changes, list) else []:
        if not isinstance(change, Mapping):
            continue
        name = str(change.get("feature", "?"))
        if change.get("supplied"):
            tried.append(f"{name} given")  # a masked feature: its value is not said
        else:
            before, after = change.get("from"), change.get("to")
            tried.append(f"{name} {_shown(before)} \u2192 {_shown(after)}")
    return [f"{e.who} tried a what-if on ", e.obj, channel(e.d), in_brackets(listing(tried))]


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


@sentence("decision.counterfactuals_requested")
def _counterfactuals_requested(e: Event) -> list[Part]:
    return [f"{e.who} asked for the counterfactuals of ", e.obj, " again"]


@sentence("decisions.searched")
def _searched(e: Event) -> list[Part]:
    params = e.d.get("params") or {}
    terms = in_brackets(*search_terms(params))
    return [f"{e.who} searched ", search_ref(e.ctx, params), channel(e.d), terms]


@sentence("decisions.exported")
def _exported(e: Event) -> list[Part]:
    params = e.d.get("params") or {}
    fmt = file_format(e.d.get("format"))
    return [
        f"{e.who} exported ",
        search_ref(e.ctx, params),
        f" as {fmt}" if fmt else "",
        in_brackets(*search_terms(params)),
    ]


@sentence("search_index.created", "search_index.dropped")
def _search_index(e: Event) -> list[Part]:
    done = "indexed" if e.facts.action.endswith("created") else "dropped the index on"
    return [f"{e.who} {done} feature {e.d.get('feature', '?')} of model {e.facts.model or '?'}"]


# Explanations, human oversight


VERDICTS = {"agree": "agrees", "disagree": "disagrees", "unsure": "unsure"}


@sentence("feedback.submitted")
def _feedback(e: Event) -> list[Part]:
    verdict = e.d.get("verdict")
    return [f"{e.who} gave feedback on ", e.obj, in_brackets(VERDICTS.get(verdict, verdict or ""))]


@sentence("review.flagged")
def _flagged(e: Event) -> list[Part]:
    case = e.d.get("case")
    named: list[Part] = [" (", case_ref(e.ctx, case, e.facts.object_id), ")"] if case else []
    return [f"{e.who} flagged ", e.obj, " for review", *named]


def case_ref(ctx: Context, pk: Any, decision_id: Any) -> Ref:
    """A review case has no page of its own: its decision's page shows it (#review)."""
    url = decision_ref(ctx, decision_id).url if _id(decision_id) else None
    return Ref(f"review case {_id(pk)}".strip(), f"{url}#review" if url else None)


def _case(e: Event) -> list[Part]:
    decision = e.d.get("decision")
    case: list[Part] = [case_ref(e.ctx, e.facts.object_id, decision)]
    if decision:
        case += [" of ", decision_ref(e.ctx, decision)]
    return case


@sentence("review.taken")
def _taken(e: Event) -> list[Part]:
    return [f"{e.who} took ", *_case(e)]


@sentence("review.resolved")
def _resolved(e: Event) -> list[Part]:
    resolution = e.d.get("resolution")
    if resolution == "overridden":
        how = f": overridden, the outcome is now '{plain_value(e.d.get('outcome'))}'"
    elif resolution == "confirmed":
        how = ": the decision is confirmed"
    else:
        how = f": {resolution}" if resolution else ""
    return [f"{e.who} resolved ", *_case(e), how]


@sentence("labelled_data.exported")
def _labelled(e: Event) -> list[Part]:
    span = e.d.get("period") or {}
    fmt = file_format(e.d.get("format"))
    return [
        f"{e.who} exported {count(e.d.get('rows', 0), 'labelled decision')} of ",
        e.version(),
        f" as {fmt}" if fmt else "",
        in_brackets(period(span.get("from"), span.get("to")) if isinstance(span, dict) else ""),
    ]


# Monitoring


@sentence("monitoring.requested")
def _monitoring_requested(e: Event) -> list[Part]:
    window = e.d.get("window")
    what = f"the {window} metrics" if window else "metrics"
    return [
        f"{e.who} asked for {what} of ",
        e.version(page="monitoring-version"),
        f" {period(e.d.get('start'), e.d.get('end'))}".rstrip(),
        in_brackets(f"metric snapshot {e.facts.object_id}" if e.facts.object_id else ""),
    ]


@sentence("monitoring.configured")
def _monitoring_configured(e: Event) -> list[Part]:
    before, after = e.d.get("before") or {}, e.d.get("after") or {}
    changed = [
        f"{key.replace('_', ' ')} {_setting(before.get(key))} → {_setting(after.get(key))}"
        for key in after
        if before.get(key) != after.get(key)
    ]
    how = f": {'; '.join(changed)}" if changed else ", unchanged"
    return [
        f"{e.who} changed the monitoring settings of ",
        e.version(page="monitoring-version"),
        how,
    ]


def _setting(value: Any) -> str:
    if value in (None, "", {}, []):
        return "none"
    return moment(value) if isinstance(value, str) else plain_value(value)


@sentence("alert.raised")
def _alert_raised(e: Event) -> list[Part]:
    metric = METRIC_NAMES.get(str(e.d.get("metric")), str(e.d.get("metric") or "a metric"))
    subject = f" of '{e.d['subject']}'" if e.d.get("subject") else ""
    value = f" at {figure(e.d['value'])}" if e.d.get("value") is not None else ""
    snapshot = e.d.get("snapshot")
    return [
        f"{e.who} raised ",
        e.obj,
        f"{e.on_model}: {metric}{subject}{value}",
        in_brackets(f"metric snapshot {snapshot}" if snapshot else ""),
    ]


@sentence("alert.resolved")
def _alert_resolved(e: Event) -> list[Part]:
    value = f" at {figure(e.d['value'])}" if e.d.get("value") is not None else ""
    return [f"{e.who} resolved ", e.obj, f"{e.on_model}: back within bounds{value}"]


@sentence("alert.acknowledged")
def _alert_acknowledged(e: Event) -> list[Part]:
    return [f"{e.who} acknowledged ", e.obj, e.on_model]


# Reports


def _report(e: Event, verb: str) -> list[Part]:
    fmt = file_format(e.d.get("format"))
    if e.d.get("kind") == "decision_notice":
        about: list[Part] = [" for ", decision_ref(e.ctx, e.d.get("decision_id"))]
        return [f"{e.who} {verb} ", e.obj, *about, channel(e.d), in_brackets(fmt)]
    span = period(e.d.get("from"), e.d.get("to")) if verb == "requested" else ""
    return [f"{e.who} {verb} ", e.obj, " on ", e.version(), channel(e.d), in_brackets(fmt, span)]


@sentence("report.requested")
def _report_requested(e: Event) -> list[Part]:
    return _report(e, "requested")


@sentence("report.downloaded")
def _report_downloaded(e: Event) -> list[Part]:
    return _report(e, "downloaded")


# The log itself


AUDIT_WORDS = {
    "actor": "user {}",
    "action": "action {}",
    "object_type": "object type {}",
    "object_id": "object id {}",
}


def _audit_terms(params: Mapping[str, Any]) -> list[str]:
    terms = [
        AUDIT_WORDS[k].format(f"{v}*" if k == "action" and str(v).endswith(".") else v)
        for k, v in params.items()
        if k in AUDIT_WORDS and v
    ]
    when = period(params.get("from"), params.get("to"))
    return [*terms, when] if when else terms


def _audit_ref(e: Event, params: Mapping[str, Any]) -> Ref:
    url = e.ctx.url(e.ctx.can(roles.READ_AUDIT), "audit-log")
    query = sorted((k, v) for k, v in params.items() if isinstance(v, str))
    return Ref("the access log", f"{url}?{urlencode(query)}" if url and query else url)


@sentence("audit_log.viewed")
def _audit_viewed(e: Event) -> list[Part]:
    params = e.d.get("params") or {}
    return [
        f"{e.who} read ",
        _audit_ref(e, params),
        channel(e.d),
        in_brackets(*_audit_terms(params)),
    ]


@sentence("audit_log.exported")
def _audit_exported(e: Event) -> list[Part]:
    params = e.d.get("params") or {}
    return [
        f"{e.who} downloaded ",
        _audit_ref(e, params),
        " as CSV",
        in_brackets(*_audit_terms(params)),
    ]


@sentence("seal.exported")
def _seal_exported(e: Event) -> list[Part]:
    return [f"{e.who} downloaded ", e.obj, channel(e.d)]


@sentence("decisions.retired")
def _retired(e: Event) -> list[Part]:
    rows = e.d.get("rows") or {}
    decisions = rows.get("decisions_decision", 0) if isinstance(rows, dict) else 0
    others = sum(
        n for table, n in (rows.items() if isinstance(rows, dict) else ()) if isinstance(n, int)
    ) - (decisions if isinstance(decisions, int) else 0)
    return [
        f"{e.who} retired {count(decisions, 'decision')} predicted in {e.d.get('month')}"
        f" and {count(others, 'row')} referring to them, by declaration "
        f"#{e.d.get('declaration')}{channel(e.d)}"
    ]


# Privacy: erasure, legal holds, retention, a person's requests (issue 20)


@sentence("decisions.erased")
def _erased(e: Event) -> list[Part]:
    cause = {
        "retention": "past their retention period",
        "subject_request": "at the subject's request",
    }
    return [
        f"{e.who} erased the personal inputs of {count(e.d.get('decisions', 0), 'decision')} "
        f"{cause.get(str(e.d.get('cause')), '')}, by declaration #{e.facts.object_id}"
        f"{channel(e.d)}"
    ]


def _hold_terms(d: Mapping[str, Any]) -> str:
    when = period(d.get("from"), d.get("to"))
    subject = f"subject {d['subject_ref']}" if d.get("subject_ref") else ""
    model = f"model {d['model']}" if d.get("model") else ""
    return in_brackets(model, when or "", subject)


@sentence("legal_hold.placed")
def _hold_placed(e: Event) -> list[Part]:
    return [f"{e.who} placed ", e.obj, _hold_terms(e.d), channel(e.d)]


@sentence("legal_hold.released")
def _hold_released(e: Event) -> list[Part]:
    return [f"{e.who} released ", e.obj, _hold_terms(e.d), channel(e.d)]


@sentence("retention.set")
def _retention_set(e: Event) -> list[Part]:
    days = e.d.get("days")
    period_text = f"{count(days, 'day')}" if days else "for ever"
    duty = e.d.get("duty_days")
    return [
        f"{e.who} set how long ",
        e.obj,
        f" keeps decisions' inputs: {period_text}"
        + (f", at least {count(duty, 'day')}" if duty else ""),
        channel(e.d),
    ]


@sentence("retention.previewed")
def _retention_previewed(e: Event) -> list[Part]:
    models = e.d.get("models") or {}
    n = sum(v for v in models.values() if isinstance(v, int)) if isinstance(models, dict) else 0
    return [f"{e.who} previewed the retention run ({count(n, 'decision')} to erase){channel(e.d)}"]


@sentence("subject_request.filed")
def _subject_filed(e: Event) -> list[Part]:
    kind = "an access" if e.d.get("kind") == "access" else "an erasure"
    status = " (refused)" if e.d.get("status") == "refused" else ""
    return [
        f"{e.who} filed {kind} request for subject {e.d.get('subject_ref')}{status}: ",
        e.obj,
        channel(e.d),
    ]


@sentence("subject_request.downloaded")
def _subject_downloaded(e: Event) -> list[Part]:
    fmt = str(e.d.get("format", "")).upper()
    return [
        f"{e.who} downloaded the access report of subject {e.d.get('subject_ref')} ",
        in_brackets(fmt, count(e.d.get("decisions", 0), "decision")),
        " of ",
        e.obj,
        channel(e.d),
    ]


@sentence("data_keys.rotation_started")
def _rotation_started(e: Event) -> list[Part]:
    return [
        f"{e.who} began re-encrypting {count(e.d.get('pending'), 'decision')}' sensitive "
        f"inputs under data key {e.d.get('key_id')}"
    ]


@sentence("data_keys.rotation_finished")
def _rotation_finished(e: Event) -> list[Part]:
    return [
        f"{e.who} re-encrypted {count(e.d.get('reencrypted'), 'decision')}' sensitive inputs "
        f"under data key {e.d.get('key_id')} in {count(e.d.get('batches'), 'batch', 'batches')}, "
        f"{figure(e.d.get('left'))} left"
    ]


@sentence("chain.verified")
def _verified(e: Event) -> list[Part]:
    against = e.d.get("against") or {}
    kept = ""
    if isinstance(against, dict) and against.get("tree_size") is not None:
        kept = f" against a kept seal of tree size {figure(against['tree_size'])}"
    elif isinstance(against, dict) and against.get("index") is not None:
        kept = f" against kept seal #{against['index']} of the former hash chain"
    head: list[Part] = [f"{e.who} verified the chain{kept}{channel(e.d)}"]
    if e.d.get("ok"):
        checked = listing(
            count(e.d.get(key, 0), noun)
            for key, noun in (
                ("decisions", "decision"),
                ("events", "audit event"),
                ("seals", "seal"),
            )
        )
        return [*head, f": it held ({checked})"]
    return [*head, ": it did not hold", *_first_bad(e)]


def _first_bad(e: Event) -> list[Part]:
    bad = e.d.get("first_bad")
    if not isinstance(bad, dict):
        return []
    reason = f": {bad['reason']}" if bad.get("reason") else ""
    kind = bad.get("kind")
    if kind == "decision":
        return [", first at ", decision_ref(e.ctx, bad.get("id")), reason]
    if kind == "seal":
        size = f" (tree size {figure(bad['tree_size'])})" if bad.get("tree_size") else ""
        return [f", first at seal #{bad.get('index')}{size}{reason}"]
    if kind == "event":
        return [f", first at audit event {bad.get('id')}{reason}"]
    return [
        f", first at {bad.get('label') or kind or 'a record'} {bad.get('id', '')}".rstrip() + reason
    ]


# --- putting it together --------------------------------------------------------------


def generic(facts: Facts, ctx: Context = PLAIN) -> Sentence:
    """An action without a sentence of its own: 'alice: report archived (report 12)'."""
    words = facts.action.replace(".", " ").replace("_", " ").strip() or "an event"
    name = facts.actor_name or "someone"
    try:
        obj = object_ref(ctx, facts)
    except Exception:  # an object id of an odd shape: its type and id as they are
        obj = Ref(f"{object_name(facts.object_type)} {facts.object_id}".strip())
    parts: list[Part] = [f"{name}: {words}"]
    if obj is not None:
        parts += [" (", obj, ")"]
    return Sentence(tuple(parts), generic=True)


def describe(event: Any, ctx: Context = PLAIN) -> Sentence:
    """The event as a sentence; an AuditEvent or Facts. Never raises on odd details."""
    facts = event if isinstance(event, Facts) else Facts.of(event)
    build = SENTENCES.get(facts.action)
    if build is None:
        return generic(facts, ctx)
    try:
        parts = build(Event(facts, ctx))
    except Exception:  # details of an older shape: say what can be said
        log.debug("audit.sentence.failed action=%s", facts.action, exc_info=True)
        return generic(facts, ctx)
    return Sentence(tuple(p for p in parts if p != ""))
