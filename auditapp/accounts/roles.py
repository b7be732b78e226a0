"""The one place that says who may do what.

A role (a Django group of the same name) grants capabilities. An API token
narrows its user's capabilities to its scopes and, optionally, to some models.
Every view and API endpoint asks this module; `tests/accounts/test_role_matrix.py`
walks the whole role x endpoint matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db.models import F, Q, QuerySet

from auditapp.accounts.models import ApiToken

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


ADMIN = "admin"
ML_ENGINEER = "ml_engineer"
COMPLIANCE_OFFICER = "compliance_officer"
DOMAIN_EXPERT = "domain_expert"
AUDITOR = "auditor"
ROLES = (ADMIN, ML_ENGINEER, COMPLIANCE_OFFICER, DOMAIN_EXPERT, AUDITOR)

# Capabilities
MANAGE_USERS = "manage_users"
REGISTER_MODELS = "register_models"
UPLOAD_JOBLIB = "upload_joblib"  # joblib artifacts are pickles: trusted roles only
CHANGE_STAGE = "change_stage"
INGEST = "ingest"
READ_MODELS = "read_models"
READ_DECISIONS = "read_decisions"
ALL_MODELS = "all_models"  # sees every model, not only the assigned ones
VIEW_SENSITIVE = "view_sensitive"
REQUEST_EXPLANATIONS = "request_explanations"
# Try edited inputs on a decision's model (the what-if): a reviewer's tool, audited.
WHAT_IF = "what_if"
GIVE_FEEDBACK = "give_feedback"
WORK_REVIEWS = "work_reviews"
EXPORT_REPORTS = "export_reports"
READ_AUDIT = "read_audit"
VERIFY_CHAIN = "verify_chain"
EXPORT_TRAINING_DATA = "export_training_data"  # labelled decisions, for the model's owners
# Monitoring: reading it is READ_MODELS; these are its writes.
RUN_MONITORING = "run_monitoring"  # compute a window's metrics on demand
ACKNOWLEDGE_ALERTS = "acknowledge_alerts"
CONFIGURE_MONITORING = "configure_monitoring"  # the reference and fairness settings
# Serving: run a model on inputs and record the decision (POST .../predict).
PREDICT = "predict"
# Privacy (issue 20): legal holds (placing and releasing them; reading them), a model's
# retention period and the retention run, a person's access and erasure requests.
MANAGE_LEGAL_HOLDS = "manage_legal_holds"
READ_LEGAL_HOLDS = "read_legal_holds"
SET_RETENTION = "set_retention"
FILE_SUBJECT_REQUESTS = "file_subject_requests"
READ_SUBJECT_REQUESTS = "read_subject_requests"
# Changing a model's traffic policy decides which version answers, as a stage change
# does: one capability for both.
CHANGE_TRAFFIC = CHANGE_STAGE
# Four-eyes: decide (approve or reject) another person's gated change of a model (a stage
# change to or from production, its traffic policy, a production version's monitoring
# settings, turning four-eyes off). Whoever may make a change may also decide another's
# request for it; this capability lets a role decide any of them without making them.
APPROVE_CHANGES = "approve_changes"

# A decision notice is the person's own inputs at work (its reasons say which way a
# masked value pushed): exporting one needs both.
EXPORT_NOTICES = (EXPORT_REPORTS, VIEW_SENSITIVE)

CAPABILITIES = frozenset(
    {
        MANAGE_USERS,
        REGISTER_MODELS,
        UPLOAD_JOBLIB,
        CHANGE_STAGE,
        INGEST,
        READ_MODELS,
        READ_DECISIONS,
        ALL_MODELS,
        VIEW_SENSITIVE,
        REQUEST_EXPLANATIONS,
        WHAT_IF,
        GIVE_FEEDBACK,
        WORK_REVIEWS,
        EXPORT_REPORTS,
        READ_AUDIT,
        VERIFY_CHAIN,
        EXPORT_TRAINING_DATA,
        RUN_MONITORING,
        ACKNOWLEDGE_ALERTS,
        CONFIGURE_MONITORING,
        PREDICT,
        APPROVE_CHANGES,
        MANAGE_LEGAL_HOLDS,
        READ_LEGAL_HOLDS,
        SET_RETENTION,
        FILE_SUBJECT_REQUESTS,
        READ_SUBJECT_REQUESTS,
    }
)

ROLE_CAPABILITIES: dict[str, frozenset[str]] = {
    ADMIN: CAPABILITIES,
    ML_ENGINEER: frozenset(
        {
            REGISTER_MODELS,
            UPLOAD_JOBLIB,
            CHANGE_STAGE,
            INGEST,
            PREDICT,
            READ_MODELS,
            READ_DECISIONS,
            VIEW_SENSITIVE,
            REQUEST_EXPLANATIONS,
            WHAT_IF,
            EXPORT_TRAINING_DATA,
            RUN_MONITORING,
            ACKNOWLEDGE_ALERTS,
            CONFIGURE_MONITORING,
        }
    ),
    COMPLIANCE_OFFICER: frozenset(
        {
            APPROVE_CHANGES,
            RUN_MONITORING,
            ACKNOWLEDGE_ALERTS,
            READ_MODELS,
            READ_DECISIONS,
            ALL_MODELS,
            VIEW_SENSITIVE,
            REQUEST_EXPLANATIONS,
            WHAT_IF,
            EXPORT_REPORTS,
            READ_AUDIT,
            VERIFY_CHAIN,
            MANAGE_LEGAL_HOLDS,
            READ_LEGAL_HOLDS,
            SET_RETENTION,
            FILE_SUBJECT_REQUESTS,
            READ_SUBJECT_REQUESTS,
        }
    ),
    DOMAIN_EXPERT: frozenset(
        {
            READ_MODELS,
            READ_DECISIONS,
            VIEW_SENSITIVE,
            REQUEST_EXPLANATIONS,
            WHAT_IF,
            GIVE_FEEDBACK,
            WORK_REVIEWS,
        }
    ),
    # Read-only, and never sees personal data unmasked.
    AUDITOR: frozenset(
        {
            READ_MODELS,
            READ_DECISIONS,
            ALL_MODELS,
            EXPORT_REPORTS,
            READ_AUDIT,
            VERIFY_CHAIN,
            READ_LEGAL_HOLDS,
            READ_SUBJECT_REQUESTS,
        }
    ),
}

# What an API token's scopes allow: the one table (README: "API token scopes" is
# generated from it, see scope_table). A token never exceeds its user's role.
SCOPES = ("read", "ingest", "predict", "report", "admin")
SCOPE_CAPABILITIES: dict[str, frozenset[str]] = {
    # Every read, plus the computations a reader asks for: explanations, what-ifs
    # (computed, never stored), monitoring windows, verification of the chain.
    "read": frozenset(
        {
            READ_MODELS,
            READ_DECISIONS,
            VIEW_SENSITIVE,
            READ_AUDIT,
            VERIFY_CHAIN,
            REQUEST_EXPLANATIONS,
            WHAT_IF,
            RUN_MONITORING,
            READ_LEGAL_HOLDS,
            READ_SUBJECT_REQUESTS,
        }
    ),
    # Decisions and outcomes, from a production system.
    "ingest": frozenset({INGEST}),
    # Serving: predictions, each recorded as a decision (a production system's token).
    "predict": frozenset({PREDICT}),
    # Reports and notices (which need the person's inputs), labelled-data exports.
    "report": frozenset(
        {
            EXPORT_REPORTS,
            EXPORT_TRAINING_DATA,
            READ_MODELS,
            VIEW_SENSITIVE,
            FILE_SUBJECT_REQUESTS,
            READ_SUBJECT_REQUESTS,
        }
    ),
    # Everything else too: the registry, stages and traffic policies and the approvals of
    # their changes, users and tokens, monitoring settings, alerts, feedback and reviews.
    "admin": CAPABILITIES,
}
# Not actions but the reach of the role: which models it sees. Scopes never narrow
# them (an admin's ingest token still ingests into every model); --models does.
ROLE_REACH = frozenset({ALL_MODELS})


def scope_table() -> str:
    """The README's table of scopes and the capabilities each allows (kept equal by a test)."""
    rows = ["| capability | " + " | ".join(f"`{scope}`" for scope in SCOPES) + " |"]
    rows.append("| --- |" + " --- |" * len(SCOPES))
    for capability in sorted(CAPABILITIES - ROLE_REACH):
        marks = " | ".join("yes" if capability in SCOPE_CAPABILITIES[s] else "" for s in SCOPES)
        rows.append(f"| `{capability}` | {marks} |")
    return "\n".join(rows)


# Who must use two factors (a TOTP code after the password or single sign-on) when
# ATTEST_REQUIRE_2FA is on: the roles that manage users and settings, and the one that
# reads every model's personal data and the whole access log.
TWO_FACTOR_ROLES = frozenset({ADMIN, COMPLIANCE_OFFICER})


def two_factor_required(user: AbstractBaseUser) -> bool:
    """Whether this user must enrol a TOTP device and verify a code in each session."""
    if not settings.ATTEST_REQUIRE_2FA:
        return False
    return any(role in TWO_FACTOR_ROLES for role in role_names(user))


def role_names(user: AbstractBaseUser) -> list[str]:
    """The user's roles, read once per request and cached on the user object."""
    cached = getattr(user, "_attest_roles", None)
    if cached is None:
        cached = _granted(user, lambda: user.groups.values_list("name", flat=True))
        user._attest_roles = cached
    return cached


def _granted(user: AbstractBaseUser, group_names: Callable[[], Iterable[str]]) -> list[str]:
    """The roles among the user's groups (read only for an active user); admin for superusers."""
    if not user.is_authenticated or not user.is_active:
        return []
    granted = [name for name in group_names() if name in ROLES]
    if user.is_superuser and ADMIN not in granted:
        granted.append(ADMIN)
    return granted


GROUP_ANNOTATION = "attest_group"


def with_roles(queryset: QuerySet, user_path: str = "") -> QuerySet:
    """Users (or rows that reach a user by `user_path`, "user__") with the user's group names.

    A LEFT JOIN in the same query, one row per group (one row for a user in none):
    whoever reads who is signed in (a session's user, a token's) needs no second
    round trip for the roles. Nothing is kept beyond the request, so a changed
    role counts at once. Pass the rows of the user to remember_roles.
    """
    return queryset.annotate(**{GROUP_ANNOTATION: F(f"{user_path}groups__name")})


def remember_roles(user: AbstractBaseUser, rows: Iterable[object]) -> None:
    """Keep on `user`, for role_names, the group names read with it (with_roles' rows)."""
    names = [getattr(row, GROUP_ANNOTATION) for row in rows]
    user._attest_roles = _granted(user, lambda: names)


@dataclass(frozen=True)
class ModelScope:
    """Which registered models an actor may see: all of them, or those listed."""

    all_models: bool
    assigned_to_user_id: int | None  # limit to models assigned to this user
    names: frozenset[str] | None  # limit to these names (a token's restriction)


def models_q(actor: Actor, prefix: str = "") -> Q:
    """The models an actor may see, as a filter on registered models (or on rows reaching
    one by `prefix`, "registered_model__"): registry.models.visible_models_q, for the apps
    below the registry too."""
    scope = actor.model_scope
    q = Q()
    if not scope.all_models:
        q &= Q(**{f"{prefix}assignees__id": scope.assigned_to_user_id})
    if scope.names is not None:
        q &= Q(**{f"{prefix}name__in": scope.names})
    return q


@dataclass(frozen=True)
class Actor:
    """A user acting in a request, possibly through an API token."""

    user: AbstractBaseUser
    token: ApiToken | None = None
    # The operator at the command line (manage.py): trusted with everything; or the app
    # itself acting on its own (shadow versions scoring what was served), named so.
    system: bool = False
    system_name: str = "system (manage.py)"

    @property
    def capabilities(self) -> frozenset[str]:
        if self.system:
            return CAPABILITIES
        granted: frozenset[str] = frozenset().union(
            *(ROLE_CAPABILITIES[role] for role in role_names(self.user))
        )
        if self.token is not None:
            allowed = frozenset().union(
                *(SCOPE_CAPABILITIES.get(scope, frozenset()) for scope in self.token.scopes)
            )
            granted &= allowed | ROLE_REACH
        return granted

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def require(self, *capabilities: str) -> None:
        """Raise PermissionDenied (403) unless the actor has every capability named."""
        for capability in capabilities:
            if not self.can(capability):
                raise PermissionDenied(f"Your role does not allow this ({capability}).")

    @property
    def model_scope(self) -> ModelScope:
        names = None
        if self.token is not None and self.token.model_names:
            names = frozenset(self.token.model_names)
        if self.can(ALL_MODELS):
            return ModelScope(all_models=True, assigned_to_user_id=None, names=names)
        return ModelScope(all_models=False, assigned_to_user_id=self.user.pk, names=names)

    @property
    def revision(self) -> str | None:
        """The configuration revision this actor's request was authenticated at: what it
        reads may be cached by it (accounts/revision.py). None: read everything."""
        return self.token.revision if self.token is not None else None

    @property
    def identity(self) -> tuple:
        """Who, for a per-process cache of what they may see: the user and the token."""
        return (self.user.pk, self.token.pk if self.token is not None else None, self.system)

    @property
    def label(self) -> str:
        if self.system:
            return self.system_name
        name = self.user.get_username() if self.user.is_authenticated else "anonymous"
        return f"{name} (token {self.token.key_prefix})" if self.token else name


def system_actor(name: str = "system (manage.py)") -> Actor:
    """The actor of management commands run by an operator with shell access (or of the
    app's own background work, under another name)."""
    return Actor(user=AnonymousUser(), system=True, system_name=name)


def actor_for(request) -> Actor:
    """The Actor of a Django or DRF request."""
    token = getattr(request, "auth", None)
    return Actor(user=request.user, token=token if isinstance(token, ApiToken) else None)
