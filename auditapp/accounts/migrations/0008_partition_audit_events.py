"""On PostgreSQL, audit events are partitioned by month of their id (auditapp/partitions.py).

As decisions are (decisions.0010): the events recorded so far become the partition
accounts_auditevent_legacy, in place; this month's partition and the next ones are
created. SQLite is left as it is.
"""

from django.db import migrations

from auditapp import partitions

TABLE = "accounts_auditevent"


class Migration(migrations.Migration):
    dependencies = [("accounts", "0007_logrecord")]
    operations = [partitions.partitioning(TABLE)]
