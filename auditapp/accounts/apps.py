from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "auditapp.accounts"
    label = "accounts"
    verbose_name = "Accounts and audit log"

    def ready(self) -> None:
        from auditapp.accounts import signals  # noqa: F401
