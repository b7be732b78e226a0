"""`flush` for test databases, which transactional tests call after each test.

On PostgreSQL the append-only tables refuse TRUNCATE by trigger. The test
database's owner is a superuser, who may switch triggers off for the session
(`session_replication_role = replica`), as any superuser could: that is why the
seals exist. The application's own settings never install this command.
"""

from django.core.management.commands import flush
from django.db import connections


class Command(flush.Command):
    def handle(self, **options):
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            return super().handle(**options)
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
        try:
            super().handle(**options)
            # Not a model's table: partitioned decisions' unique keys (auditapp/partitions.py).
            with connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass('decisions_decision_unique') IS NOT NULL")
                if cursor.fetchone()[0]:
                    cursor.execute("TRUNCATE decisions_decision_unique")
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET session_replication_role = DEFAULT")
