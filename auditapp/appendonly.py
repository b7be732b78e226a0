"""Append-only rows: the model layer refuses updates and deletes.

Decisions, outcomes, feedback and audit events are records, not state: a
correction is a new row. On PostgreSQL, triggers enforce the same rule below
the application (see the migrations).
"""

from django.db import models


class AppendOnlyError(Exception):
    """Raised when code tries to change or remove an append-only row."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(
            f"{self.model.__name__} rows are append-only; they cannot be updated."
        )

    def delete(self):
        raise AppendOnlyError(
            f"{self.model.__name__} rows are append-only; they cannot be deleted."
        )


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} {self.pk} is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} {self.pk} is append-only.")


def append_only_trigger_sql(table: str) -> tuple[str, str]:
    """Forward and reverse SQL for a PostgreSQL trigger refusing UPDATE/DELETE/TRUNCATE."""
    forward = f"""
    CREATE OR REPLACE FUNCTION attest_refuse_change() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'table % is append-only (% refused)', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$ LANGUAGE plpgsql;
    CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION attest_refuse_change();
    CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION attest_refuse_change();
    """
    reverse = f"""
    DROP TRIGGER IF EXISTS {table}_append_only ON {table};
    DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};
    """
    return forward, reverse
