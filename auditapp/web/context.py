"""Template context shared by every page."""

from auditapp.accounts import roles


def navigation(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"user_roles": []}
    return {"user_roles": roles.role_names(user)}
