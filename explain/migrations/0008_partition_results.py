"""On PostgreSQL, explanation results are partitioned by month of their id (auditapp/partitions.py).

As decisions are (decisions.0010): the results stored so far become the partition
explain_explanationresult_legacy, in place; this month's partition and the next ones
are created; the work rows' foreign key to their result points at the partitioned
table. SQLite is left as it is.
"""

from django.db import migrations

from auditapp import partitions

TABLE = "explain_explanationresult"


class Migration(migrations.Migration):
    dependencies = [("explain", "0007_top_reasons")]
    operations = [partitions.partitioning(TABLE)]
