"""Monitoring settings of a version (what it is compared against, its fairness groups):
created with its default rules on first need, read and changed by the API."""

from __future__ import annotations

import math
from typing import Any

from django.db import transaction
from django.utils import timezone

from auditapp.accounts import roles
from auditapp.accounts.audit import record_event
from auditapp.errors import InvalidInput
from auditapp.monitoring.alerts import ensure_default_rules
from auditapp.monitoring.models import MonitoringSettings
from auditapp.monitoring.windows import parse_period
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
}


def settings_json(config: MonitoringSettings) -> dict:
    return {
        "reference": config.reference_kind,
        "reference_from": config.reference_start.isoformat() if config.reference_start else None,
        "reference_to": config.reference_end.isoformat() if config.reference_end else None,
        "favourable_class": config.favourable_class,
        "fairness_groups": config.fairness_groups,
        "updated_by": config.updated_by.get_username() if config.updated_by else None,
        "updated_at": config.updated_at.isoformat(),
    }


def _settings_changes(model_version: ModelVersion, data: Any) -> dict:
    if not isinstance(data, dict):
        raise InvalidInput("The body must be an object.")
    unknown = sorted(set(data) - SETTINGS_FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown setting(s) {unknown}; known: {sorted(SETTINGS_FIELDS)}.")
    schema = model_version.parsed_schema
    changes: dict[str, Any] = {}
    if "reference" in data:
        kinds = [k for k, _ in MonitoringSettings.REFERENCE_KINDS]
        if data["reference"] not in kinds:
            raise InvalidInput(f"reference must be one of {kinds}.")
        changes["reference_kind"] = data["reference"]
        if data["reference"] == MonitoringSettings.PERIOD:
            start, end = parse_period(
                {"from": data.get("reference_from"), "to": data.get("reference_to")}
            )
            changes.update(reference_start=start, reference_end=end)
        else:
            changes.update(reference_start=None, reference_end=None)
    if "favourable_class" in data:
        value = data["favourable_class"]
        if value is not None and value not in schema.target.classes:
            raise InvalidInput(f"favourable_class must be one of {list(schema.target.classes)}.")
        changes["favourable_class"] = value
    if "fairness_groups" in data:
        changes["fairness_groups"] = _groups(schema, data["fairness_groups"])
    return changes


def _groups(schema, groups: Any) -> dict:
    numeric = {f.name for f in schema.features if f.protected and f.type in ("numeric", "integer")}
    if not isinstance(groups, dict):
        raise InvalidInput('fairness_groups must be an object, e.g. {"age": [25, 40, 60]}.')
    for name, edges in groups.items():
        if name not in numeric:
            raise InvalidInput(f"{name!r} is not a numeric protected feature of this version.")
        if not (
            isinstance(edges, list)
            and edges
            and all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges)
            and all(math.isfinite(e) for e in edges)
            and edges == sorted(set(edges))
        ):
            raise InvalidInput(f"fairness_groups[{name!r}] must be increasing finite numbers.")
    return groups


@transaction.atomic
def configure_monitoring(
    actor: roles.Actor, model_version: ModelVersion, data: Any, *, ip=None
) -> MonitoringSettings:
    """Change what a version is compared against (audited, with the values before and after)."""
    actor.require(roles.CONFIGURE_MONITORING)
    changes = _settings_changes(model_version, data)
    config = ensure_monitoring(model_version)
    config = MonitoringSettings.objects.select_for_update().get(pk=config.pk)
    before = settings_json(config)
    for field, value in changes.items():
        setattr(config, field, value)
    config.updated_by = actor.user
    config.updated_at = timezone.now()
    config.save(update_fields=[*changes, "updated_by", "updated_at"])
    after = settings_json(config)
    record_event(
        "monitoring.configured",
        actor=actor,
        target=model_version,
        ip=ip,
        before={k: before[k] for k in before if k in SETTINGS_FIELDS},
        after={k: after[k] for k in after if k in SETTINGS_FIELDS},
    )
    return config
