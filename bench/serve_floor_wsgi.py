"""The floor of the predict design, single and batch: what bench/serve.py measures beside Attest.

Two applications. `raw_application` is the raw baseline served: the model's own
predict_proba on the row and one autocommitted INSERT into bench/ingest.py's scratch table,
nothing else (what the server around a request costs, beside the same work in a loop).
`application`:

Not the product. A plain WSGI application, under the same gunicorn, that does what a
served prediction must do and nothing around it, with the product's own functions where
the work is the same:

- the token checked once per process, then kept (the product keeps it per configuration
  revision);
- the inputs checked against the version's schema (the product's rules), the model
  scored by the product's `score_rows` (the preprocessing once for predict and
  predict_proba);
- the decision's row built by the product (its content hash with salted commitments,
  the sensitive values sealed), its explanation work rows and the ingestion event hashed
  as the product hashes them;
- two round trips to PostgreSQL in pipeline mode: the sealing lock with the new id (the
  time is stamped after the lock: sealing's backdating rule), then the decision, its work
  rows and the event in one statement, and the commit.

No policy, no canary, no shadow, no idempotent retry, no explanation or counterfactual
messages to the broker, no rate limits, no Django request stack: the design's floor, not
a product. Answers like the product: {"prediction", "score", "decision_id", "version",
"arm"}.

A batch (`{"instances": [...]}`, figure b'') goes the same way: each instance checked by
the schema's rules, the model once on all of them, every row built by the product; then
the lock and the ids in one round trip, one COPY of the decisions, their explanation work
rows in one INSERT and the event, the commit. No counterfactual work rows (the demo's
policy selects some adverse decisions for them; the product writes those too).
"""

from __future__ import annotations

import os
import secrets
import threading
from datetime import UTC, datetime

import django
import orjson

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "auditapp.settings")
django.setup()

import psycopg  # noqa: E402 - after Django's set-up
from django.db import connection  # noqa: E402

from auditapp.accounts.audit import id_runs  # noqa: E402
from auditapp.accounts.authentication import ApiTokenAuthentication  # noqa: E402
from auditapp.accounts.models import AuditEvent  # noqa: E402
from auditapp.appendonly import SEALING_LOCK  # noqa: E402
from auditapp.decisions import services  # noqa: E402
from auditapp.decisions.models import INGESTED_EVENT, PRODUCTION  # noqa: E402
from auditapp.decisions.validation import CheckedDecision  # noqa: E402
from auditapp.encryption import NONCE_BYTES  # noqa: E402
from auditapp.hashing import SALT_BYTES  # noqa: E402
from auditapp.registry.models import ModelVersion  # noqa: E402
from auditapp.serving.services import score_rows  # noqa: E402
from auditapp.sqlarrays import id_array  # noqa: E402
from bench.ingest import RawBaseline, timed_application  # noqa: E402
from explain.explainers import cached_context  # noqa: E402
from explain.models import Explanation  # noqa: E402
from explain.services import methods_for  # noqa: E402

MODEL = os.environ.get("BENCH_SERVE_MODEL", "credit")
VERSION = ModelVersion.objects.select_related("registered_model").get(
    registered_model__name=MODEL, version="1"
)
CONTEXT = cached_context(VERSION)
PATH = f"/api/v1/models/{MODEL}/predict"
CONNECT = {k: v for k, v in connection.get_connection_params().items() if k != "context"}
connection.close()  # each gunicorn thread opens its own below
DECISION_COLUMNS = services.DECISION_COLUMNS
EVENT_FIELDS = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]

_tokens: dict[str, object] = {}
_local = threading.local()


def _actor(key: str):
    """The token's user, checked by the product once per key and process."""
    if key not in _tokens:
        user, _ = ApiTokenAuthentication().authenticate_credentials(key)
        _tokens[key] = user
    return _tokens[key]


def _connection() -> psycopg.Connection:
    if getattr(_local, "conn", None) is None:
        _local.conn = psycopg.connect(**CONNECT)
    return _local.conn


def _answer(start_response, status: str, body: dict) -> list[bytes]:
    data = orjson.dumps(body)
    start_response(status, [("Content-Type", "application/json")])
    return [data]


def predict(environ, start_response):
    if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
        return _answer(start_response, "404 Not Found", {"error": "not here"})
    header = environ.get("HTTP_AUTHORIZATION", "")
    user = _actor(header.removeprefix("Token ").strip())
    body = orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
    if "instances" in body:
        return predict_batch(start_response, user, body["instances"])
    inputs = body["inputs"]
    if errors := CONTEXT.schema.input_errors(inputs):
        return _answer(start_response, "400 Bad Request", {"errors": errors})
    (prediction,), (score,) = score_rows(CONTEXT, [inputs])
    conn = _connection()
    with conn.pipeline():
        locked = conn.execute(
            "SELECT pg_advisory_xact_lock_shared(%s), decisions_decision_next_id()",
            [SEALING_LOCK],
        )
        (_, decision_id) = locked.fetchone()
    recorded_at = datetime.now(UTC)
    checked = _checked(0, body, prediction, score, recorded_at)
    stamp = services._Stamp(recorded_at, services._time_text(recorded_at), "api", _Actor(user))
    randomness = secrets.token_bytes(SALT_BYTES + NONCE_BYTES)
    row = services._row(checked, stamp, randomness[:SALT_BYTES], randomness[SALT_BYTES:])
    event_values = _event_values(user, stamp, [decision_id])
    methods = methods_for(VERSION, row["content_hash"])
    with conn.pipeline():
        conn.execute(
            f"WITH d AS (INSERT INTO decisions_decision ({', '.join(DECISION_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(DECISION_COLUMNS))}) RETURNING id), "
            "w AS (INSERT INTO explain_explanation "
            "(decision_id, method, status, attempts, error, created_at, updated_at) "
            "SELECT d.id, m, %s, 0, '', %s, %s FROM d, unnest(%s::text[]) AS m) "
            f"INSERT INTO {AuditEvent._meta.db_table} "
            f"({', '.join(f.column for f in EVENT_FIELDS)}) "
            f"VALUES ({', '.join(['%s'] * len(EVENT_FIELDS))})",
            [
                *services.row_values(decision_id, row),
                Explanation.PENDING,
                recorded_at,
                recorded_at,
                methods,
                *event_values,
            ],
        )
        conn.commit()
    return _answer(
        start_response,
        "200 OK",
        {
            "prediction": prediction,
            "score": score,
            "decision_id": decision_id,
            "version": VERSION.version,
            "arm": PRODUCTION,
        },
    )


def predict_batch(start_response, user, instances: list[dict]):
    """The floor of a batch: each instance checked by the product's schema rules, the
    model once on all, the rows built by the product (hashes, salted commitments, sealed
    values), then under the sealing lock: one COPY of the decisions, one INSERT of their
    explanation work rows, the event, the commit (three round trips and the COPY's)."""
    if errors := [
        {"index": n, "errors": found}
        for n, item in enumerate(instances)
        if (found := CONTEXT.schema.input_errors(item["inputs"]))
    ]:
        return _answer(start_response, "400 Bad Request", {"errors": errors})
    predictions, scores = score_rows(CONTEXT, [item["inputs"] for item in instances])
    conn = _connection()
    with conn.pipeline():
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", [SEALING_LOCK])
        drawn = conn.execute(
            "SELECT decisions_decision_next_id() FROM generate_series(1, %s)", [len(instances)]
        )
        ids = [row[0] for row in drawn.fetchall()]
    recorded_at = datetime.now(UTC)
    stamp = services._Stamp(recorded_at, services._time_text(recorded_at), "api", _Actor(user))
    size = SALT_BYTES + NONCE_BYTES
    pool = secrets.token_bytes(size * len(instances))
    pairs = []
    with (
        conn.cursor() as cursor,
        cursor.copy(f"COPY decisions_decision ({', '.join(DECISION_COLUMNS)}) FROM STDIN") as copy,
    ):
        for n, (item, prediction, score, decision_id) in enumerate(
            zip(instances, predictions, scores, ids, strict=True)
        ):
            checked = _checked(n, item, prediction, score, recorded_at)
            salt_at = n * size
            row = services._row(
                checked,
                stamp,
                pool[salt_at : salt_at + SALT_BYTES],
                pool[salt_at + SALT_BYTES : salt_at + size],
            )
            copy.write_row(services.row_values(decision_id, row))
            pairs += [(decision_id, m) for m in methods_for(VERSION, row["content_hash"])]
    event_values = _event_values(user, stamp, ids)
    with conn.pipeline():
        conn.execute(
            "INSERT INTO explain_explanation "
            "(decision_id, method, status, attempts, error, created_at, updated_at) "
            "SELECT v.d, v.m, %s, 0, '', %s, %s FROM unnest(%s::bigint[], %s::text[]) AS v(d, m)",
            [
                Explanation.PENDING,
                recorded_at,
                recorded_at,
                id_array(d for d, _ in pairs),
                [m for _, m in pairs],
            ],
        )
        conn.execute(
            f"INSERT INTO {AuditEvent._meta.db_table} "
            f"({', '.join(f.column for f in EVENT_FIELDS)}) "
            f"VALUES ({', '.join(['%s'] * len(EVENT_FIELDS))})",
            event_values,
        )
    conn.commit()
    answers = [
        {
            "prediction": prediction,
            "score": score,
            "decision_id": decision_id,
            "version": VERSION.version,
            "arm": PRODUCTION,
        }
        for prediction, score, decision_id in zip(predictions, scores, ids, strict=True)
    ]
    return _answer(start_response, "200 OK", {"results": answers})


def _checked(index: int, item: dict, prediction, score, recorded_at) -> CheckedDecision:
    """An instance as the product's row builder takes it, scored and served now."""
    return CheckedDecision(
        index=index,
        model_version=VERSION,
        request_id=item["request_id"],
        inputs=item["inputs"],
        prediction=prediction,
        score=score,
        predicted_at=recorded_at,
        subject_ref=item.get("subject_ref"),
        metadata={},
        arm=PRODUCTION,
    )


def _event_values(user, stamp, ids: list[int]) -> list:
    """The ingestion event of these decisions, hashed as the product hashes it: its
    column values in EVENT_FIELDS order."""
    event = AuditEvent(
        model=MODEL,
        actor=user,
        actor_name=stamp.client,
        action=INGESTED_EVENT,
        object_type="decisions.decision",
        details={"created": len(ids), "duplicates": 0, "ids": id_runs(ids)},
        at=stamp.recorded_at,
    )
    event.content_hash = event.compute_content_hash()
    return [f.get_db_prep_save(f.pre_save(event, True), connection) for f in EVENT_FIELDS]


class _Actor:
    """What services._Stamp reads of an actor."""

    def __init__(self, user):
        self.user = user
        self.label = user.get_username()


def raw_predict(environ, start_response):
    """predict_proba on the row and one INSERT, as bench/serve.py's raw loop does."""
    import pandas as pd

    body = orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
    user = _actor(environ.get("HTTP_AUTHORIZATION", "").removeprefix("Token ").strip())
    if getattr(_local, "raw", None) is None:
        _local.raw = RawBaseline(VERSION, user, create=False)
    frame = pd.DataFrame([body["inputs"]])[CONTEXT.schema.names]
    score = float(CONTEXT.model.predict_proba(frame)[0][1])
    item = {**body, "prediction": "good", "score": score, "predicted_at": datetime.now(UTC)}
    _local.raw.insert_one(item)
    return _answer(
        start_response,
        "200 OK",
        {"prediction": "good", "score": score, "decision_id": 0, "version": "1", "arm": "raw"},
    )


application = timed_application(predict)
raw_application = timed_application(raw_predict)
