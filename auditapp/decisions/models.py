"""Decisions: one row per production prediction, never updated or deleted."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection, models
from django.utils import timezone

from auditapp.appendonly import AppendOnlyModel, AppendOnlyQuerySet
from auditapp.encryption import merged, row_binding
from auditapp.hashing import content_hash, decision_document
from auditapp.registry.models import ModelVersion, RegisteredModel, visible_models_q

# The audit event a request that records decisions writes, one per model, naming
# the ids it created ([first, last] runs): verification reconciles the two.
INGESTED_EVENT = "decisions.ingested"

# The arm of a decision the app served itself (serving/): the policy's production version,
# its canary, the fallback while the policy is disabled, or a shadow version that scored
# the same inputs after the answer was sent (never returned to anyone). Ingested
# decisions have none.
PRODUCTION, CANARY, FALLBACK, SHADOW = "production", "canary", "fallback", "shadow"
ARMS = (PRODUCTION, CANARY, FALLBACK, SHADOW)
SERVED_ARMS = (PRODUCTION, CANARY, FALLBACK)


def served_q(prefix: str = "") -> models.Q:
    """Decisions someone was told: ingested ones (no arm) and every arm but shadow."""
    return models.Q(**{f"{prefix}arm__isnull": True}) | models.Q(
        **{f"{prefix}arm__in": SERVED_ARMS}
    )


class DecisionKey(models.Model):
    """A row of `decisions_decision_unique`, PostgreSQL's (model, request_id) -> id side
    table for the partitioned decisions (auditapp/partitions.py keeps it, by trigger).
    Read only, and only on PostgreSQL; SQLite has the unique index on the table itself."""

    registered_model_id = models.BigIntegerField()
    request_id = models.CharField(max_length=200)
    id = models.BigIntegerField(primary_key=True)

    class Meta:
        managed = False
        db_table = "decisions_decision_unique"

    def __str__(self) -> str:
        return f"{self.registered_model_id}/{self.request_id} -> {self.id}"


def request_ids_q(request_ids, *, model_id: int | None = None, model_name: str | None = None):
    """Decisions of one model (by id or name) with these request_ids.

    On PostgreSQL the decisions are partitioned by month and the side table is the only
    index on (model, request_id): the ids are read from it, and each decision by its id.
    Filtering the decisions themselves by request_id reads every decision of the model in
    every month (4 ms at 18,000 decisions; seconds at a million a month), on every predict,
    every retry and every outcome given by request_id.
    """
    request_ids = list(request_ids)
    if model_id is not None:
        model = models.Q(registered_model_id=model_id)
        models_wanted: Any = [model_id]
    else:
        model = models.Q(registered_model__name=model_name)
        models_wanted = RegisteredModel.objects.filter(name=model_name).values("id")
    if connection.vendor != "postgresql":
        return model & models.Q(request_id__in=request_ids)
    keys = DecisionKey.objects.filter(
        registered_model_id__in=models_wanted, request_id__in=request_ids
    ).values("id")
    return model & models.Q(pk__in=keys)


class DecisionQuerySet(AppendOnlyQuerySet):
    def visible_to(self, actor) -> DecisionQuerySet:
        """Decisions of the models the actor may see."""
        scope = visible_models_q(actor, prefix="registered_model__")
        return self.filter(scope) if scope else self

    def served(self) -> DecisionQuerySet:
        """Decisions someone was told: every arm but shadow (and ingested ones, which have
        no arm). Reports, notices, monitoring and the search's default read these."""
        return self.filter(served_q())

    def with_related(self) -> DecisionQuerySet:
        """With the model (joined) and the version (read once per version, not per row).

        A version row carries its schema, settings and self-test as JSON: joined to
        each decision, a page of 50 decoded it 50 times. Prefetched, the decisions
        of one version share one object, and its schema is parsed once.
        """
        return self.select_related("registered_model").prefetch_related("model_version")


class Decision(AppendOnlyModel):
    SOURCES = [("api", "API"), ("serving", "serving"), ("import", "import")]

    registered_model = models.ForeignKey(
        RegisteredModel, on_delete=models.PROTECT, related_name="decisions"
    )
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="decisions"
    )
    request_id = models.CharField(max_length=200)
    # null: no subject was given (a distinct fact from an empty reference).
    subject_ref = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    inputs = models.JSONField()
    prediction = models.JSONField()
    score = models.FloatField(null=True, blank=True)
    predicted_at = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=10, choices=SOURCES)
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64)
    # The salt of the sensitive inputs' commitment (hashing.py); null before commitments.
    salt = models.BinaryField(null=True, blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    client = models.CharField(max_length=200, blank=True, help_text="User or token that sent it.")
    # Served by the app itself (serving/): which arm of the traffic policy; null if ingested.
    arm = models.CharField(  # noqa: DJ001 - null: not served by the app, distinct from any arm
        max_length=10, choices=[(a, a) for a in ARMS], null=True, blank=True
    )
    # A shadow decision: the id of the served decision whose inputs it scored. An id, not a
    # foreign key: months are retired one at a time (decisions/retention.py).
    served_by = models.BigIntegerField(null=True, blank=True)
    # 2: recorded in document form 2, every input committed to (hashing.py); null: before.
    document_form = models.PositiveSmallIntegerField(null=True, blank=True)
    # Once its personal inputs are erased (decisions/erasure.py): the commitments its
    # document keeps, {"inputs", "sensitive_inputs"}, and the erasure declaration's id
    # ("erasure"). The inputs are then {} and the salt null.
    kept_commitments = models.JSONField(null=True, blank=True)
    # The sensitive inputs, encrypted (auditapp/encryption.py): `inputs` then holds only the
    # others. Null: none, or recorded before encryption at rest and not yet rotated
    # (`manage.py rotate_data_keys` seals those too).
    sealed_inputs = models.BinaryField(null=True, blank=True)
    # The blind index of the sealed values, {name: token}, for an exact search on them.
    sensitive_tokens = models.JSONField(null=True, blank=True)

    objects = DecisionQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "request_id"], name="unique_request_id_per_model"
            )
        ]
        indexes = [
            models.Index(fields=["model_version", "predicted_at"]),
            models.Index(fields=["predicted_at", "id"]),
            models.Index(fields=["subject_ref"]),
            # A score bound that few decisions pass (score_min=0.99) is read from here,
            # not by filtering every decision of the period (bench/search.py).
            models.Index(fields=["score"], name="decisions_by_score"),
            models.Index(
                fields=["served_by"],
                name="decisions_by_served",
                condition=models.Q(served_by__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"decision {self.pk} ({self.request_id})"

    def hashed_fields(self) -> dict:
        return {
            "model": self.registered_model.name,
            "version": self.model_version.version,
            "artifact_sha256": self.model_version.artifact_sha256,
            "request_id": self.request_id,
            "subject_ref": self.subject_ref,
            "inputs": self.full_inputs(),
            "prediction": self.prediction,
            "score": self.score,
            "predicted_at": self.predicted_at,
            "recorded_at": self.recorded_at,
            "source": self.source,
            "metadata": self.metadata,
            "arm": self.arm,
            "served_by": self.served_by,
        }

    def full_inputs(self) -> dict[str, Any]:
        """Every input, the sensitive ones decrypted: for the system's own work (explaining,
        scoring, monitoring, hashing). What a person sees goes through the presenters,
        which mask the sensitive ones for roles without view_sensitive. Raises
        encryption.UnreadableInputs when the blob's key is missing or it is not this row's."""
        cached = self.__dict__.get("_full_inputs")
        if cached is None:
            row = row_binding(self.registered_model_id, self.request_id)
            cached = merged(self.inputs, self.sealed_inputs, row)
            self.__dict__["_full_inputs"] = cached
        return cached

    @property
    def is_shadow(self) -> bool:
        return self.arm == SHADOW

    @property
    def sensitive_names(self) -> frozenset[str]:
        """The inputs this decision commits to rather than hashes in clear."""
        return self.model_version.parsed_schema.sensitive_names

    @property
    def salt_bytes(self) -> bytes | None:
        return None if self.salt is None else bytes(self.salt)

    @property
    def erased(self) -> bool:
        """Whether its personal inputs were erased (the commitments are kept)."""
        return self.kept_commitments is not None

    def document(self) -> dict[str, Any]:
        """What its content hash covers (hashing.decision_document)."""
        return decision_document(
            self.hashed_fields(),
            self.sensitive_names,
            self.salt_bytes,
            self.document_form,
            self.kept_commitments,
        )

    def sensitive_commitment(self) -> str | None:
        """The commitment to the sensitive inputs that the content hash covers."""
        return self.document().get("sensitive_inputs")

    def inputs_commitment(self) -> str | None:
        """Form 2: the commitment to the non-sensitive inputs that the content hash covers."""
        value = self.document().get("inputs") if self.document_form else None
        return value if isinstance(value, str) else None

    def compute_content_hash(self) -> str:
        return content_hash(
            self.hashed_fields(),
            self.sensitive_names,
            self.salt_bytes,
            self.document_form,
            self.kept_commitments,
        )


class Outcome(AppendOnlyModel):
    """Ground truth for a decision, arriving later (SR 11-7 outcomes analysis). Append-only."""

    SOURCES = [("api", "API"), ("import", "import")]

    decision = models.ForeignKey(Decision, on_delete=models.PROTECT, related_name="outcomes")
    outcome = models.JSONField()
    observed_at = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    source = models.CharField(max_length=10, choices=SOURCES, default="api")

    class Meta:
        ordering = ["-observed_at", "-id"]

    def __str__(self) -> str:
        return f"outcome {self.outcome!r} of decision {self.decision_id}"


class Seal(AppendOnlyModel):
    """A signed tree head of the log, and the records it appended.

    The log is one Merkle tree (RFC 6962) over every sealed record in sealing
    order: a seal appends the decisions, then the audit events, then the other
    records (accounts/records.py), written since the previous seal, each in id
    order (leaf formats: `decisions/log.py`).
    Its tree head (tree_size, root_hash, sealed_at) is signed with Ed25519.

    It keeps the ids and content hashes it appended, so verification can name
    the first row that no longer matches, and the tree's frontier and the roots
    of the large subtrees it completed, so that proofs read a few hashes instead
    of hashing the log again.
    """

    index = models.PositiveIntegerField(unique=True)
    sealed_at = models.DateTimeField(default=timezone.now)
    first_leaf = models.BigIntegerField()  # the previous seal's tree_size
    tree_size = models.BigIntegerField(unique=True)
    root_hash = models.CharField(max_length=64)
    signature = models.CharField(max_length=88)  # base64 Ed25519, see decisions/signing.py
    key_id = models.CharField(max_length=16)
    decision_count = models.PositiveIntegerField()
    last_decision_id = models.BigIntegerField(null=True)
    event_count = models.PositiveIntegerField()
    last_event_id = models.BigIntegerField(null=True)
    record_count = models.PositiveIntegerField(default=0)
    last_record_id = models.BigIntegerField(null=True)
    # Packed little-endian int64 ids and 32-byte content hashes, in id order.
    decision_ids = models.BinaryField()
    decision_leaves = models.BinaryField()
    event_ids = models.BinaryField()
    event_leaves = models.BinaryField()
    record_ids = models.BinaryField(default=b"")
    record_leaves = models.BinaryField(default=b"")
    # The roots of the perfect subtrees making up the tree of tree_size leaves, left
    # to right; and those of 2^8, 2^16, ... leaves this seal completed, by size then
    # position (log.STORED_HEIGHTS).
    frontier = models.BinaryField()
    nodes = models.BinaryField()
    # Whether this seal stopped at its row limit before what was there to seal: a backlog
    # sealed in parts. The next part holds rows recorded before this seal was made, which
    # verification must not call backdated (verification._Clock). Null: sealed before this
    # was kept (a part is then recognised by its full row limit).
    cut = models.BooleanField(null=True)

    class Meta:
        ordering = ["index"]

    def __str__(self) -> str:
        return f"seal {self.index} (tree size {self.tree_size})"


class VerificationJob(models.Model):
    """One verification of the whole log run by a worker, with its progress and result.

    Verification reads and hashes every record: a web request must not wait for
    it, nor fork processes to speed it up (POST /api/v1/audit/verify, the
    /audit/ page's button).
    """

    PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
    STATUSES = [(s, s) for s in (PENDING, RUNNING, DONE, FAILED)]

    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    progress = models.PositiveSmallIntegerField(default=0)  # 0-100: records checked / total
    against = models.JSONField(null=True, blank=True)  # a seal kept outside, to check against
    result = models.JSONField(null=True, blank=True)  # what GET /api/v1/audit/verify answers
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    via = models.CharField(max_length=10, default="api")
    ip = models.GenericIPAddressField(null=True, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return f"verification {self.pk} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.DONE, self.FAILED)


class Retirement(AppendOnlyModel):
    """A declaration that an expired month's decisions, and every row referring to them,
    are retired: written, and recorded in the sealed log, before any of them goes.

    `tables` holds, per table, the rows retired, their id ranges (each [first, last]
    holds no row that was kept) and the partitions detached or dropped. Verification
    accepts a sealed row missing inside a declared range, names the declaration, and
    still calls any other missing row deleted. On PostgreSQL the append-only triggers
    let a DELETE through only for the ranges (RetiredRange) of the declaration written
    in the deleting transaction (auditapp/appendonly.py).
    """

    DETACH, DROP, DELETE = "detach", "drop", "delete"
    MODES = [
        (DETACH, "partitions detached"),
        (DROP, "partitions dropped"),
        (DELETE, "rows deleted"),
    ]

    month = models.CharField(max_length=7)  # "2026-01": the decisions predicted in it
    declared_at = models.DateTimeField()
    declared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    mode = models.CharField(max_length=10, choices=MODES)
    tables = models.JSONField()  # {table: {"label", "rows", "ranges", "partitions"}}

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"retirement declaration #{self.pk} ({self.month})"


class RetiredRange(AppendOnlyModel):
    """One declared id range of one table, as the database's triggers read it."""

    retirement = models.ForeignKey(Retirement, on_delete=models.PROTECT, related_name="ranges")
    table_name = models.CharField(max_length=63)
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["retirement", "table_name", "first_id"])]

    def __str__(self) -> str:
        return f"{self.table_name} {self.first_id}-{self.last_id} (#{self.retirement_id})"


class Erasure(AppendOnlyModel):
    """A declaration that some decisions' personal inputs are erased: written, recorded in
    the sealed log and sealed before any of them is (decisions/erasure.py).

    The decisions keep their commitments (Decision.kept_commitments), so their content
    hashes still recompute. On PostgreSQL the append-only triggers let through only the
    one UPDATE of an erasure (inputs to {}, salt to null, the commitments kept, nothing
    else) for the ids in the ranges (ErasedRange) of the declaration written in the
    updating transaction (auditapp/appendonly.py).
    """

    SUBJECT_REQUEST, RETENTION = "subject_request", "retention"
    CAUSES = [(SUBJECT_REQUEST, "a person's erasure request"), (RETENTION, "retention period")]

    cause = models.CharField(max_length=20, choices=CAUSES)
    reason = models.TextField()
    subject_ref = models.CharField(max_length=200, blank=True)  # a subject's request
    declared_at = models.DateTimeField()
    declared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    decisions = models.PositiveIntegerField()
    # {"ranges": [[first, last], ...], "by_model": {model: {month: count}}}
    scope = models.JSONField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"erasure declaration #{self.pk} ({self.cause}, {self.decisions} decisions)"


class ErasedRange(AppendOnlyModel):
    """One declared id range of decisions of an erasure, as the database's triggers read it
    (it may hold decisions that are not erased: those of older forms, or held)."""

    erasure = models.ForeignKey(Erasure, on_delete=models.PROTECT, related_name="ranges")
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["erasure", "first_id"])]

    def __str__(self) -> str:
        return f"{self.first_id}-{self.last_id} of erasure #{self.erasure_id}"


class LegalHoldQuerySet(models.QuerySet):
    def active(self) -> LegalHoldQuerySet:
        return self.filter(released_at__isnull=True)


class LegalHold(models.Model):
    """Decisions that must not lose anything while a matter is open (decisions/holds.py):
    those of a model, of a period (predicted_at in [starts, ends)), of a subject, or
    of any combination; until released, with a reason, by a compliance officer or admin."""

    registered_model = models.ForeignKey(
        RegisteredModel, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    starts = models.DateTimeField(null=True, blank=True)
    ends = models.DateTimeField(null=True, blank=True)
    subject_ref = models.CharField(max_length=200, blank=True)
    reason = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    released_at = models.DateTimeField(null=True, blank=True)
    release_reason = models.TextField(blank=True)

    objects = LegalHoldQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"legal hold {self.pk}"

    def covers_q(self, prefix: str = "") -> models.Q:
        """The decisions it covers, as a filter (on decisions, or through `prefix`)."""
        q = models.Q()
        if self.registered_model_id is not None:
            q &= models.Q(**{f"{prefix}registered_model_id": self.registered_model_id})
        if self.starts is not None:
            q &= models.Q(**{f"{prefix}predicted_at__gte": self.starts})
        if self.ends is not None:
            q &= models.Q(**{f"{prefix}predicted_at__lt": self.ends})
        if self.subject_ref:
            q &= models.Q(**{f"{prefix}subject_ref": self.subject_ref})
        return q


class RetentionPolicy(models.Model):
    """How long a model's decisions keep their personal inputs (decisions/erasure.py).

    `days`: inputs of decisions predicted longer ago are erased by the daily run (null:
    kept for ever). `duty_days`: a duty to keep them at least this long (Reg B's 25
    months, say): a person's erasure request touching a younger decision is refused.
    """

    registered_model = models.OneToOneField(
        RegisteredModel, on_delete=models.PROTECT, related_name="retention"
    )
    days = models.PositiveIntegerField(null=True, blank=True)
    duty_days = models.PositiveIntegerField(null=True, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"retention of model {self.registered_model_id}: {self.days} days"


class VersionDayTally(models.Model):
    """How many served decisions of a version fall on a day (UTC) in a score bin: the
    version page's figures without reading every decision (decisions/tallies.py).

    Derived data, for decisions up to TallyMark's id: those are sealed, so final (no
    decision with a smaller id can still arrive). `bin` is -1 for a decision without a
    score. Retiring a month drops every tally, and the next seal counts them again.
    """

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    bin = models.SmallIntegerField()
    decisions = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "day", "bin"], name="one_tally_per_version_day_bin"
            )
        ]

    def __str__(self) -> str:
        return f"{self.decisions} of version {self.model_version_id} on {self.day}, bin {self.bin}"


class TallyMark(models.Model):
    """The one row saying which decisions the tallies count: every one with an id up to
    `through_id` (0: none yet)."""

    through_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"tallies through decision {self.through_id}"
