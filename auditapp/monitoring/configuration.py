"""Monitoring settings of a version (what it is compared against, its fairness groups, its
own alert rules' thresholds): created with its default rules on first need, read and
changed by the API and by the form on the version's monitoring page, both through
`configure_monitoring`, so each rule of validation is written once, here.

A refused change names every field at fault: `InvalidInput.details` maps each field (as
the API body names it: `reference_from`, `fairness_groups.age`, `rules.12.threshold`) to
its reasons; the page shows them beside its inputs of the same names.

The minimum sample sizes and the alerts' delivery are the deployment's (environment
variables, README: Monitoring), the same for every version: `deployment_settings` says
what they are, for the page to show.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.approvals.models import Approval
from auditapp.approvals.services import gated, request_approval
from auditapp.errors import Conflict, InvalidInput
from auditapp.hashing import sha256_hex
from auditapp.monitoring.alerts import applicable_rules, ensure_default_rules
from auditapp.monitoring.models import AlertRule, MonitoringSettings
from auditapp.monitoring.windows import parse_moment, parse_period
from auditapp.registry.models import ModelVersion


def ensure_monitoring(model_version: ModelVersion) -> MonitoringSettings:
    """The version's monitoring settings and default alert rules, created on first need."""
    config, _ = MonitoringSettings.objects.get_or_create(model_version=model_version)
    ensure_default_rules(model_version)
    return config


SETTINGS_FIELDS = {
    "reference",
    "reference_from",
    "reference_to",
    "favourable_class",
    "fairness_groups",
    "rules",
}
RULE_FIELDS = {"id", "threshold", "enabled"}
# What a threshold may be, per metric: outside it the rule could never fire, or always
# would. PSI has no upper bound; a ROC AUC drop may be negative (a gain); every other
# metric is a rate, a ratio or a score between 0 and 1.
THRESHOLD_RANGES: dict[str, tuple[float, float]] = {
    "input_drift_psi": (0.0, math.inf),
    "score_drift_psi": (0.0, math.inf),
    "roc_auc_drop": (-1.0, 1.0),
}
UNIT_RANGE = (0.0, 1.0)


def threshold_range(metric: str) -> tuple[float, float]:
    return THRESHOLD_RANGES.get(metric, UNIT_RANGE)


def rule_scope(rule: AlertRule) -> str:
    """Whom a rule applies to: this version, every version of its model, or every version.
    Only a version's own rules are its settings; the others are changed in the admin."""
    if rule.model_version_id:
        return "version"
    return "model" if rule.registered_model_id else "all"


def rule_json(rule: AlertRule) -> dict:
    return {
        "id": rule.pk,
        "name": rule.name,
        "metric": rule.metric,
        "comparison": rule.comparison,
        "threshold": rule.threshold,
        "window": rule.window,
        "enabled": rule.enabled,
        "scope": rule_scope(rule),
    }


def version_rules(model_version: ModelVersion) -> list[AlertRule]:
    """Every rule that judges the version (its own first), enabled or not."""
    rules = applicable_rules(model_version).order_by("id")
    return sorted(rules, key=lambda r: rule_scope(r) != "version")


def settings_json(config: MonitoringSettings, rules: list[AlertRule] | None = None) -> dict:
    if rules is None:
        rules = version_rules(config.model_version)
    return {
        "reference": config.reference_kind,
        "reference_from": config.reference_start.isoformat() if config.reference_start else None,
        "reference_to": config.reference_end.isoformat() if config.reference_end else None,
        "favourable_class": config.favourable_class,
        "fairness_groups": config.fairness_groups,
        "rules": [rule_json(r) for r in rules],
        "updated_by": config.updated_by.get_username() if config.updated_by else None,
        "updated_at": config.updated_at.isoformat(),
    }


def deployment_settings() -> dict:
    """The minimum sample sizes and the delivery of alerts: the same for every version,
    set by environment variables. The webhook shows its host alone (its path may hold a
    secret), the e-mail recipients their number."""
    webhook = settings.ATTEST_ALERT_WEBHOOK_URL
    emails = settings.ATTEST_ALERT_EMAILS
    return {
        "min_decisions": settings.ATTEST_MONITORING_MIN_DECISIONS,
        "min_drift_decisions": settings.ATTEST_MONITORING_MIN_DRIFT_DECISIONS,
        "min_outcomes_per_class": settings.ATTEST_MONITORING_MIN_OUTCOMES_PER_CLASS,
        "webhook_host": urlsplit(webhook).hostname if webhook else None,
        "email_recipients": len(emails) if emails else 0,
    }


class Problems:
    """The reasons a change is refused, by field; all of them are told at once."""

    def __init__(self) -> None:
        self.details: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.details.setdefault(field, []).append(message)

    @contextmanager
    def about(self, field: str, prefix: str = "") -> Iterator[None]:
        """An InvalidInput raised inside (by a shared parser) becomes a reason of `field`."""
        try:
            yield
        except InvalidInput as exc:
            self.add(field, prefix + exc.message)

    def __contains__(self, field: str) -> bool:
        return field in self.details

    def raise_any(self) -> None:
        if self.details:
            messages = [m for reasons in self.details.values() for m in reasons]
            raise InvalidInput(" ".join(messages), details=self.details)


def _settings_changes(
    model_version: ModelVersion, data: Any, own_rules: dict[int, AlertRule]
) -> tuple[dict, dict[int, dict]]:
    """The settings' new values and each own rule's, from an API body (or the page's form
    turned into one); InvalidInput naming every field at fault."""
    if not isinstance(data, dict):
        raise InvalidInput("The body must be an object.")
    problems = Problems()
    for name in sorted(set(data) - SETTINGS_FIELDS):
        problems.add(name, f"Unknown setting {name!r}; known: {sorted(SETTINGS_FIELDS)}.")
    schema = model_version.parsed_schema
    changes: dict[str, Any] = {}
    if "reference" in data:
        changes.update(_reference(data, problems))
    if data.get("reference") != MonitoringSettings.PERIOD:
        # read only with a period reference: they had been ignored, the answer a 200
        for name in ("reference_from", "reference_to"):
            if data.get(name) not in (None, ""):
                problems.add(name, f'{name} is read only with "reference": "period".')
    if "favourable_class" in data:
        value = data["favourable_class"]
        if value is not None and value not in schema.target.classes:
            problems.add(
                "favourable_class",
                f"favourable_class must be one of {list(schema.target.classes)} (or null).",
            )
        changes["favourable_class"] = value
    if "fairness_groups" in data:
        changes["fairness_groups"] = _groups(schema, data["fairness_groups"], problems)
    rules = _rules(data["rules"], own_rules, problems) if "rules" in data else {}
    problems.raise_any()
    return changes, rules


def _reference(data: dict, problems: Problems) -> dict:
    kinds = [k for k, _ in MonitoringSettings.REFERENCE_KINDS]
    if data["reference"] not in kinds:
        problems.add("reference", f"reference must be one of {kinds}.")
        return {}
    if data["reference"] != MonitoringSettings.PERIOD:
        return {"reference_kind": data["reference"], "reference_start": None, "reference_end": None}
    for field in ("reference_from", "reference_to"):
        with problems.about(field):
            parse_moment(data.get(field), field)
    if "reference_from" in problems or "reference_to" in problems:
        return {}
    with problems.about("reference_to", prefix="The reference period: "):
        start, end = parse_period({"from": data["reference_from"], "to": data["reference_to"]})
        return {
            "reference_kind": MonitoringSettings.PERIOD,
            "reference_start": start,
            "reference_end": end,
        }
    return {}


def _groups(schema, groups: Any, problems: Problems) -> dict:
    numeric = {f.name for f in schema.features if f.protected and f.type in ("numeric", "integer")}
    if not isinstance(groups, dict):
        problems.add(
            "fairness_groups", 'fairness_groups must be an object, e.g. {"age": [25, 40, 60]}.'
        )
        return {}
    for name, edges in groups.items():
        field = f"fairness_groups.{name}"
        if name not in numeric:
            problems.add(
                field,
                f"{name!r} is not a numeric protected feature of this version "
                f"(those are {sorted(numeric)}).",
            )
        elif not (
            isinstance(edges, list)
            and edges
            and all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges)
            and all(math.isfinite(e) for e in edges)
            and edges == sorted(set(edges))
        ):
            problems.add(field, f"{field} must be increasing finite numbers, e.g. [25, 40, 60].")
    return groups


def _rules(items: Any, own: dict[int, AlertRule], problems: Problems) -> dict[int, dict]:
    """{rule id: {"threshold": ..., "enabled": ...}} for the version's own rules."""
    shape = 'rules must be a list of {"id", "threshold", "enabled"} objects.'
    if not isinstance(items, list):
        problems.add("rules", shape)
        return {}
    changes: dict[int, dict] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), int):
            problems.add("rules", shape)
            continue
        field = f"rules.{item['id']}"
        rule = own.get(item["id"])
        if rule is None:
            problems.add(
                field,
                f"{field} is not one of this version's own rules (a rule of a whole model "
                "or of every version is changed in the admin).",
            )
            continue
        for name in sorted(set(item) - RULE_FIELDS):
            problems.add(
                f"{field}.{name}", f"Unknown rule field {name!r}; known: threshold, enabled."
            )
        change: dict[str, Any] = {}
        if "threshold" in item:
            value, (low, high) = item["threshold"], threshold_range(rule.metric)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and low <= value <= high):
                bounds = f"from {low:g}" if math.isinf(high) else f"from {low:g} to {high:g}"
                problems.add(
                    f"{field}.threshold",
                    f"{field}.threshold ({rule.get_metric_display()}) must be a number {bounds}.",
                )
            else:
                change["threshold"] = float(value)
        if "enabled" in item:
            if not isinstance(item["enabled"], bool):
                problems.add(f"{field}.enabled", f"{field}.enabled must be true or false.")
            else:
                change["enabled"] = item["enabled"]
        changes[rule.pk] = change
    return changes


def _rule_name(rule: AlertRule) -> str:
    """A default rule's name states its threshold: a new threshold, a new name."""
    label = rule.get_metric_display()
    return f"{label[:1].upper()}{label[1:]} {rule.get_comparison_display()} {rule.threshold:g}"


def _audited(values: dict) -> dict:
    return {k: v for k, v in values.items() if k in SETTINGS_FIELDS}


THRESHOLDS_KIND = "thresholds"  # the four-eyes kind of a settings change (monitoring/apps.py)


@transaction.atomic
def configure_monitoring(
    actor: roles.Actor, model_version: ModelVersion, data: Any, *, ip=None, approval=None
) -> MonitoringSettings | Approval:
    """Change what a version is compared against and its own rules' thresholds (audited,
    with the values before and after; a change that changes nothing writes nothing). For a
    production version under four-eyes the change is asked for instead (the Approval
    returned); `approval`: the approved request being applied, as its requester's."""
    actor.require(roles.CONFIGURE_MONITORING)
    config = ensure_monitoring(model_version)
    config = MonitoringSettings.objects.select_for_update().get(pk=config.pk)
    own = {
        r.pk: r for r in AlertRule.objects.select_for_update().filter(model_version=model_version)
    }
    before = settings_json(config)
    if approval is not None and sha256_hex(_audited(before)) != approval.change["before"]:
        raise Conflict(
            "The monitoring settings changed since the request; nothing was changed.",
            code="approval_stale",
        )
    changes, rule_changes = _settings_changes(model_version, data, own)
    gate = (
        approval is None
        and model_version.stage == ModelVersion.PRODUCTION
        and gated(actor, model_version.registered_model)
    )
    if gate:
        if not _differs(config, changes, own, rule_changes):
            return config
        return request_approval(
            actor,
            THRESHOLDS_KIND,
            registered_model=model_version.registered_model,
            model_version=model_version,
            change={"settings": data, "before": sha256_hex(_audited(before))},
            summary=f"v{model_version.version}: monitoring settings "
            f"({', '.join(sorted(data)) if isinstance(data, dict) else ''})",
            ip=ip,
        )
    for field, value in changes.items():
        setattr(config, field, value)
    for rule_id, values in rule_changes.items():
        rule = own[rule_id]
        if not any(getattr(rule, k) != v for k, v in values.items()):
            continue
        renamed = (
            "threshold" in values and rule.is_default and values["threshold"] != rule.threshold
        )
        for name, value in values.items():
            setattr(rule, name, value)
        if renamed:
            rule.name = _rule_name(rule)
        rule.save(update_fields=[*values, *(["name"] if renamed else [])])
    after = settings_json(config)
    changed = sorted(k for k in SETTINGS_FIELDS if before[k] != after[k])
    if not changed:
        return config
    config.updated_by = actor.user if actor.user.is_authenticated else None
    config.updated_at = timezone.now()
    config.save(update_fields=[*changes, "updated_by", "updated_at"])
    record_event(
        "monitoring.configured",
        actor=actor,
        target=model_version,
        ip=ip,
        changed=changed,
        before=_audited(before),
        after=_audited(after),
        **({"approval": approval.pk} if approval is not None else {}),
    )
    return config


def _differs(config: MonitoringSettings, changes: dict, own: dict, rule_changes: dict) -> bool:
    """Whether the change would change anything (an unchanged form asks for nothing)."""
    if any(getattr(config, field) != value for field, value in changes.items()):
        return True
    return any(
        getattr(own[rule_id], name) != value
        for rule_id, values in rule_changes.items()
        for name, value in values.items()
    )


def apply_approved_settings(approval, approver: roles.Actor, ip: str | None) -> dict:
    """An approved settings change, made as its requester's (approvals.changes)."""
    requester = roles.Actor(user=approval.requested_by)
    model_version = ModelVersion.objects.select_related("registered_model").get(
        pk=approval.model_version_id
    )
    try:
        config = configure_monitoring(
            requester, model_version, approval.change["settings"], ip=ip, approval=approval
        )
    except InvalidInput as exc:
        raise Conflict(
            f"The requested settings are no longer valid: {exc.message}",
            code="approval_stale",
            details=exc.details,
        ) from None
    return {"monitoring_settings": config.pk}
