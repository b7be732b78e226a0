"""On PostgreSQL, decisions are partitioned by month of their id (auditapp/partitions.py).

The rows recorded so far become the partition decisions_decision_legacy, in place;
this month's partition and the next ones are created. SQLite is left as it is.
"""

from django.db import migrations

from auditapp import partitions

TABLE = "decisions_decision"
UNIQUE = ("registered_model_id", "request_id")  # the constraint unique_request_id_per_model


class Migration(migrations.Migration):
    dependencies = [("decisions", "0009_decisions_by_score")]
    operations = [partitions.partitioning(TABLE, unique=UNIQUE)]
