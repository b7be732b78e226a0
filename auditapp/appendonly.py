"""Append-only rows: the model layer refuses updates and deletes.

Decisions, outcomes, feedback and audit events are records, not state: a
correction is a new row. On PostgreSQL, triggers enforce the same rule below
the application (see the migrations).
"""

import datetime as dt

from django.db import connection, connections, models, router, transaction

# The PostgreSQL advisory lock that orders inserts of sealed rows against the sealer.
SEALING_LOCK = 0x41545354  # "ATST"


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


def declaration_time() -> dt.datetime:
    """The time a retirement or erasure declaration carries: its transaction's start on
    PostgreSQL, the only one the triggers below accept for the rows it names."""
    if connection.vendor != "postgresql":
        return dt.datetime.now(dt.UTC)
    with connection.cursor() as cursor:
        cursor.execute("SELECT transaction_timestamp()")
        return cursor.fetchone()[0]


def hold_insert_order() -> None:
    """Make the sealer wait for this transaction before it reads the newest id.

    Seals cover contiguous id ranges. On PostgreSQL a transaction can draw id 7,
    another id 8 and commit first; a seal up to 8 taken then would miss 7 for
    ever. Every transaction inserting sealed rows holds the shared side of one
    advisory lock (call this before the insert, inside the transaction); the
    sealer takes the exclusive side to read its horizon. SQLite has one writer
    at a time, so ids commit in order there.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [SEALING_LOCK])


def insert_in_order(row: models.Model) -> None:
    """Insert a new sealed row under the sealing lock: hold_insert_order() and the INSERT.

    On PostgreSQL the lock and the INSERT are one statement, so a request that writes
    one audit event outside a transaction pays one round trip, not four (BEGIN, the
    lock, the INSERT, COMMIT): alone, the statement is its own transaction, committed
    before it returns, and the lock is taken before the row draws its id and held
    until that commit. Inside a transaction it joins it, as before.
    """
    model = type(row)
    using = router.db_for_write(model, instance=row)
    db = connections[using]
    if db.vendor != "postgresql":
        with transaction.atomic(using=using, savepoint=False):
            row.save(force_insert=True, using=using)
        return
    meta = model._meta
    fields = [field for field in meta.concrete_fields if field is not meta.pk]
    values = [field.get_db_prep_save(field.pre_save(row, True), db) for field in fields]
    quote = db.ops.quote_name
    sql = (
        "WITH held AS (SELECT pg_advisory_xact_lock_shared(%s)) "
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"SELECT {', '.join(['%s'] * len(fields))} FROM held RETURNING {quote(meta.pk.column)}"
    )
    with transaction.mark_for_rollback_on_error(using), db.cursor() as cursor:
        cursor.execute(sql, [SEALING_LOCK, *values])
        row.pk = cursor.fetchone()[0]
    row._state.adding = False
    row._state.db = using


# The one way round the triggers: retiring an expired month (decisions/retention.py).
# A DELETE passes only in the transaction that wrote a retirement declaration, named by
# this setting (SET LOCAL), once that declaration's record is sealed in the log, and only
# for ids inside a range it lists for the table (its partitions count as the table). An
# old declaration opens nothing, as it was not written at this transaction's start; an
# unsealed one neither. UPDATE and TRUNCATE never pass.
RETIREMENT_SETTING = "attest.retirement"
# Two UPDATEs are let through, on the decisions table only. Re-encrypting sensitive inputs
# (decisions/rotation.py), in a transaction that set `attest.reencryption` to 'on':
# sealed_inputs and sensitive_tokens set, inputs only losing keys (clear sensitive values
# moving into the blob), every other column as it was; what the blob holds, verification
# judges (it opens it and checks the hash's commitment). And erasing decisions' personal
# inputs (decisions/erasure.py):
# Only on the decisions table, only in the transaction that wrote the erasure declaration
# named by this setting, once its record is sealed, only for ids in its ranges, and only
# this exact change of a form-2 decision: inputs to {}, salt, sealed_inputs and
# sensitive_tokens to null, kept_commitments from null to the commitments naming this
# declaration; every other column unchanged.
# With it, one DELETE: the counterfactual results (copies of the inputs, not sealed) of a
# decision this declaration has just erased.
ERASURE_SETTING = "attest.erasure"

REFUSE_CHANGE_FUNCTION = """
-- Whether a declaration's log record (of this kind and object id) is already sealed: the
-- one condition a retirement and an erasure share before the triggers let rows go.
CREATE OR REPLACE FUNCTION attest_sealed_record(record_kind text, object bigint)
RETURNS boolean AS $$
BEGIN
    -- PL/pgSQL, not SQL: its body is not checked against tables the early migrations that
    -- create it do not have yet
    RETURN EXISTS (
        SELECT 1 FROM accounts_logrecord l
        WHERE l.kind = record_kind AND l.object_id = object
          AND l.id <= (SELECT s.last_record_id FROM decisions_seal s
                       ORDER BY s."index" DESC LIMIT 1)
    );
END;
$$ LANGUAGE plpgsql STABLE;

CREATE OR REPLACE FUNCTION attest_refuse_change() RETURNS trigger AS $$
DECLARE
    declared text := current_setting('attest.retirement', true);
    relation text;
    covered_up_to bigint;
    erasing text := current_setting('attest.erasure', true);
BEGIN
    IF TG_OP = 'UPDATE' AND TG_LEVEL = 'ROW'
       AND coalesce(current_setting('attest.reencryption', true), '') = 'on' THEN
        relation := coalesce(pg_partition_root(TG_RELID), TG_RELID)::regclass::text;
        IF relation = 'decisions_decision' AND NEW.sealed_inputs IS NOT NULL
           AND OLD.inputs @> NEW.inputs
           AND (to_jsonb(NEW) - 'sealed_inputs' - 'sensitive_tokens' - 'inputs')
               = (to_jsonb(OLD) - 'sealed_inputs' - 'sensitive_tokens' - 'inputs') THEN
            RETURN NEW;
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND TG_LEVEL = 'ROW' AND coalesce(erasing, '') <> '' THEN
        relation := coalesce(pg_partition_root(TG_RELID), TG_RELID)::regclass::text;
        IF relation = 'decisions_decision' THEN
            IF NEW.inputs = '{}'::jsonb AND NEW.salt IS NULL AND OLD.salt IS NOT NULL
               AND NEW.sealed_inputs IS NULL AND NEW.sensitive_tokens IS NULL
               AND OLD.document_form = 2 AND OLD.kept_commitments IS NULL
               AND NEW.kept_commitments ->> 'erasure' = erasing
               AND NEW.kept_commitments ? 'inputs' AND NEW.kept_commitments ? 'sensitive_inputs'
               AND (to_jsonb(NEW) - 'inputs' - 'salt' - 'kept_commitments' - 'sealed_inputs'
                    - 'sensitive_tokens')
                   = (to_jsonb(OLD) - 'inputs' - 'salt' - 'kept_commitments' - 'sealed_inputs'
                    - 'sensitive_tokens')
            THEN
                SELECT r.last_id INTO covered_up_to FROM decisions_erasedrange r
                WHERE r.erasure_id = erasing::bigint AND r.first_id <= OLD.id
                ORDER BY r.first_id DESC LIMIT 1;
                IF covered_up_to >= OLD.id AND EXISTS (
                    SELECT 1 FROM decisions_erasure e
                    WHERE e.id = erasing::bigint AND e.declared_at = transaction_timestamp()
                      AND attest_sealed_record('erasure', e.id)
                ) THEN
                    RETURN NEW;
                END IF;
            END IF;
            RAISE EXCEPTION 'table % is append-only: decision % is not erased as erasure '
                'declaration % (written in this transaction and sealed) allows (UPDATE refused)',
                relation, OLD.id, erasing
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' AND TG_LEVEL = 'ROW' AND coalesce(erasing, '') <> '' THEN
        relation := coalesce(pg_partition_root(TG_RELID), TG_RELID)::regclass::text;
        IF relation = 'explain_counterfactualresult' THEN
            -- copies of an erased decision's inputs: only once the decision itself is
            -- erased by this declaration (sealed, of this transaction)
            IF EXISTS (
                SELECT 1 FROM decisions_decision d
                WHERE d.id = OLD.decision_id AND d.kept_commitments ->> 'erasure' = erasing
            ) AND EXISTS (
                SELECT 1 FROM decisions_erasure e
                WHERE e.id = erasing::bigint AND e.declared_at = transaction_timestamp()
                  AND attest_sealed_record('erasure', e.id)
            ) THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'table % is append-only: row % copies no decision erased by '
                'erasure declaration % (DELETE refused)', relation, OLD.id, erasing
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' AND TG_LEVEL = 'ROW' AND coalesce(declared, '') <> '' THEN
        relation := coalesce(pg_partition_root(TG_RELID), TG_RELID)::regclass::text;
        -- the declared range starting nearest below the id (one index probe: the
        -- ranges of a table in a declaration do not overlap)
        SELECT r.last_id INTO covered_up_to FROM decisions_retiredrange r
        WHERE r.retirement_id = declared::bigint AND r.table_name = relation
          AND r.first_id <= OLD.id
        ORDER BY r.first_id DESC LIMIT 1;
        IF covered_up_to >= OLD.id AND EXISTS (
            SELECT 1 FROM decisions_retirement d
            WHERE d.id = declared::bigint AND d.declared_at = transaction_timestamp()
              AND attest_sealed_record('retirement', d.id)
        ) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'table % is append-only: row % is in no range of retirement '
            'declaration %, written in this transaction and sealed (DELETE refused)',
            relation, OLD.id, declared
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RAISE EXCEPTION 'table % is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""


def append_only_triggers(*tables: str):
    """A migration operation: on PostgreSQL, triggers refusing UPDATE, DELETE and TRUNCATE.

    A database superuser can still disable triggers; the seals make what they
    change detectable. SQLite relies on the model layer above.
    """
    from django.db import migrations

    def forward(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        schema_editor.execute(REFUSE_CHANGE_FUNCTION, params=None)
        for table in tables:
            schema_editor.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION attest_refuse_change()"
            )
            schema_editor.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION attest_refuse_change()"
            )

    def reverse(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for table in tables:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")

    return migrations.RunPython(forward, reverse)
