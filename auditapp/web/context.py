"""Template context shared by every page: the user's roles and what the navigation offers."""

from auditapp.accounts import roles


def navigation(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {
            "user_roles": [],
            "can_read_audit": False,
            "can_export_reports": False,
            "can_approve": False,
            "can_read_privacy": False,
        }
    actor = roles.Actor(user=user)
    return {
        "user_roles": roles.role_names(user),
        "can_read_audit": actor.can(roles.READ_AUDIT),
        "can_export_reports": actor.can(roles.EXPORT_REPORTS),
        # Who asks for or decides four-eyes changes: the approvals page is theirs.
        "can_approve": any(
            actor.can(c)
            for c in (roles.CHANGE_STAGE, roles.CONFIGURE_MONITORING, roles.APPROVE_CHANGES)
        ),
        "can_read_privacy": actor.can(roles.READ_SUBJECT_REQUESTS),
    }
