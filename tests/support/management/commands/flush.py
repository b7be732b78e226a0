"""`flush` for test databases, which transactional tests call after each test.

On PostgreSQL the append-only tables refuse TRUNCATE by trigger. The test
database's owner is a superuser, who may switch triggers off for the session
(`session_replication_role = replica`), as any superuser could: that is why the
seals exist. The application's own settings never install this command.

There, the tables are emptied with DELETE, and only those that hold a row: a
transactional test fills a few of the 130-odd tables, and TRUNCATE costs each table
new files whether it held anything or not (most of a flush's time). The triggers being
off, foreign keys do not order the deletes. The end is the same: every table empty,
sequences as they were (as Django's flush between tests leaves them), and the
post_migrate signal sent to put back the content types and permissions.
"""

import contextlib
from importlib import import_module

from django.apps import apps
from django.core.management.commands import flush
from django.core.management.sql import emit_post_migrate_signal
from django.db import connections, transaction

# Not a model's table: partitioned decisions' unique keys (auditapp/partitions.py).
SIDE_TABLES = ("decisions_decision_unique",)


class Command(flush.Command):
    def handle(self, **options):
        connection = connections[options["database"]]
        # As asked by hand (a prompt, sequences reset): Django's own.
        if (
            connection.vendor != "postgresql"
            or options.get("interactive", True)
            or options.get("reset_sequences", True)
        ):
            return self._truncate(connection, **options)
        for app_config in apps.get_app_configs():  # their post_migrate receivers, as Django's
            with contextlib.suppress(ImportError):
                import_module(".management", app_config.name)
        tables = connection.introspection.django_table_names(only_existing=True)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NOT NULL",
                [list(SIDE_TABLES)],
            )
            tables += [name for (name,) in cursor.fetchall()]
        if not tables:
            return
        quote = connection.ops.quote_name
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute(
                " UNION ALL ".join(
                    f"SELECT {i} WHERE EXISTS (SELECT FROM {quote(table)})"
                    for i, table in enumerate(tables)
                )
            )
            for (i,) in cursor.fetchall():
                cursor.execute(f"DELETE FROM {quote(tables[i])}")
        if not options.get("inhibit_post_migrate", False):
            emit_post_migrate_signal(options["verbosity"], options["interactive"], connection.alias)

    def _truncate(self, connection, **options):
        """Django's flush (TRUNCATE, sequences reset when asked), triggers off on PostgreSQL."""
        if connection.vendor != "postgresql":
            return super().handle(**options)
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
        try:
            super().handle(**options)
            with connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass('decisions_decision_unique') IS NOT NULL")
                if cursor.fetchone()[0]:
                    cursor.execute("TRUNCATE decisions_decision_unique")
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET session_replication_role = DEFAULT")
