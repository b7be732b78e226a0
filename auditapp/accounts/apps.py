from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "auditapp.accounts"
    label = "accounts"
    verbose_name = "Accounts and audit log"

    def ready(self) -> None:
        from auditapp.accounts import checks, signals  # noqa: F401
