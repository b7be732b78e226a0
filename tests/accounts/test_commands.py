"""manage.py create_user and assign_models."""

from __future__ import annotations

import importlib
import io

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from auditapp.accounts import roles
from auditapp.accounts.models import AuditEvent
from auditapp.accounts.services import AccountError, create_user


@pytest.mark.usefixtures("role_groups")
class TestCreateUser:
    @pytest.mark.parametrize("role", roles.ROLES)
    def test_it_puts_the_user_in_the_group_named_after_the_role(self, role):
        out = io.StringIO()

        call_command("create_user", "alice", "--role", role, "--email", "a@example.org", stdout=out)

        alice = get_user_model().objects.get(username="alice")
        assert list(alice.groups.values_list("name", flat=True)) == [role]
        assert roles.role_names(alice) == [role]
        assert alice.email == "a@example.org"
        assert alice.is_staff == (role == roles.ADMIN)
        assert out.getvalue() == f"Created alice with role {role}.\n"
        event = AuditEvent.objects.get(action="user.created")
        assert (event.object_id, event.details) == (str(alice.pk), {"role": role})

    def test_without_a_password_the_user_cannot_log_in(self):
        call_command("create_user", "bob", "--role", "auditor", stdout=io.StringIO())

        assert not get_user_model().objects.get(username="bob").has_usable_password()

    def test_with_a_password_the_user_can_log_in(self, client):
        call_command(
            "create_user",
            "bob",
            "--role",
            "auditor",
            "--password",
            "s3cret-pass",
            stdout=io.StringIO(),
        )

        assert client.login(username="bob", password="s3cret-pass")

    def test_an_unknown_role_is_a_command_error(self):
        with pytest.raises(CommandError, match="invalid choice: 'superhero'"):
            call_command("create_user", "carol", "--role", "superhero")
        assert not get_user_model().objects.filter(username="carol").exists()

    def test_the_service_refuses_an_unknown_role_too(self):
        with pytest.raises(AccountError, match="Unknown role 'superhero'"):
            create_user("carol", "superhero")

    def test_an_existing_username_is_a_command_error(self):
        call_command("create_user", "dave", "--role", "auditor", stdout=io.StringIO())

        with pytest.raises(CommandError, match="already exists"):
            call_command("create_user", "dave", "--role", "admin")
        assert list(
            get_user_model().objects.get(username="dave").groups.values_list("name", flat=True)
        ) == ["auditor"]


class TestAssignModels:
    def test_it_gives_a_domain_expert_access_to_the_model(
        self, api_client, outsider, model_version
    ):
        client = api_client(outsider)
        assert client.get("/api/v1/models/credit").status_code == 404
        assert client.get("/api/v1/models").json()["results"] == []
        out = io.StringIO()

        call_command("assign_models", "outsider", "credit", stdout=out)

        assert out.getvalue() == "outsider can now see: credit.\n"
        response = client.get("/api/v1/models/credit")
        assert response.status_code == 200
        assert response.json()["name"] == "credit"
        assert [m["name"] for m in client.get("/api/v1/models").json()["results"]] == ["credit"]
        event = AuditEvent.objects.get(action="models.assigned", object_id=str(outsider.pk))
        assert event.details == {"models": ["credit"]}

    def test_it_gives_access_to_the_models_decisions(self, api_client, outsider, decision):
        client = api_client(outsider)
        assert client.get(f"/api/v1/decisions/{decision.pk}").status_code == 404

        call_command("assign_models", "outsider", "credit", stdout=io.StringIO())

        assert client.get(f"/api/v1/decisions/{decision.pk}").status_code == 200
        assert [d["id"] for d in client.get("/api/v1/decisions").json()["results"]] == [decision.pk]

    def test_an_unknown_model_is_a_command_error_and_assigns_nothing(self, outsider, model_version):
        with pytest.raises(CommandError, match="No model named 'fraud'"):
            call_command("assign_models", "outsider", "credit", "fraud")

        assert not outsider.assigned_models.exists()

    def test_an_unknown_user_is_a_command_error(self, model_version):
        with pytest.raises(CommandError, match="No user named 'nobody'"):
            call_command("assign_models", "nobody", "credit")


@pytest.mark.django_db
def test_a_data_migration_creates_one_group_per_role():
    migration = importlib.import_module("auditapp.accounts.migrations.0002_role_groups")
    Group.objects.all().delete()

    migration.create_groups(django_apps, schema_editor=None)
    migration.create_groups(django_apps, schema_editor=None)  # running it again adds nothing

    assert sorted(Group.objects.values_list("name", flat=True)) == sorted(roles.ROLES)
