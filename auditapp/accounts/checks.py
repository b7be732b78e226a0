"""`manage.py check` (and start-up of the development server): the role map names real roles."""

from django.conf import settings
from django.core import checks

from auditapp.accounts import roles


@checks.register(checks.Tags.security)
def role_map_names_roles(app_configs, **kwargs):
    unknown = sorted(
        {role for role in settings.ATTEST_OIDC_ROLE_MAP.values() if role not in roles.ROLES}
    )
    if not unknown:
        return []
    return [
        checks.Error(
            f"ATTEST_OIDC_ROLE_MAP maps groups to unknown role(s) {', '.join(unknown)}.",
            hint=f"The roles are {', '.join(roles.ROLES)}.",
            id="attest.E001",
        )
    ]
