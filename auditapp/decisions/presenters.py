"""Decisions as the API shows them, with sensitive features masked by role.

The one rule for people: a sensitive value is shown only to roles with view_sensitive.
The sealed values are opened for every reader here (the commitment the content hash
covers, shown to all, is computed from them) and masked before anything leaves."""

from __future__ import annotations

from typing import Any

from auditapp.accounts import roles
from auditapp.decisions.models import Decision
from auditapp.decisions.reasons import ERASED
from auditapp.encryption import merged, row_binding
from auditapp.hashing import commitment, input_commitments, inputs_salt
from auditapp.registry.schemas import version_schema

MASK = "[masked]"


# The columns a search result is built from as plain rows (DecisionPresenter.row_summary):
# no model objects, and the version by id and schema hash (registry.schemas), not its row.
_SHOWN_AS_STORED = (
    "request_id",
    "subject_ref",
    "inputs",
    "prediction",
    "score",
    "predicted_at",
    "recorded_at",
    "source",
    "metadata",
    "content_hash",
    "arm",
    "served_by",
)
SUMMARY_VALUES = (
    "id",
    "registered_model__name",
    "model_version_id",
    "model_version__version",
    "model_version__schema_sha256",
    *_SHOWN_AS_STORED,
    "salt",
    "document_form",
    "kept_commitments",
    "sealed_inputs",
    "registered_model_id",
)


class DecisionPresenter:
    """Turns decisions into dicts for one actor; caches each version's sensitive features."""

    def __init__(self, actor: roles.Actor):
        self.show_sensitive = actor.can(roles.VIEW_SENSITIVE)
        self._sensitive: dict[int, frozenset[str]] = {}

    def masked_features(self, decision: Decision) -> list[str]:
        if self.show_sensitive:
            return []
        version = decision.model_version
        if version.pk not in self._sensitive:
            self._sensitive[version.pk] = version.parsed_schema.sensitive_names
        return sorted(self._sensitive[version.pk] & decision.full_inputs().keys())

    def summary(self, decision: Decision) -> dict:
        return self._summary(
            {
                "id": decision.pk,
                "model": decision.registered_model.name,
                "version": decision.model_version.version,
                "request_id": decision.request_id,
                "subject_ref": decision.subject_ref,
                "inputs": decision.full_inputs(),
                "prediction": decision.prediction,
                "score": decision.score,
                "predicted_at": decision.predicted_at,
                "recorded_at": decision.recorded_at,
                "source": decision.source,
                "metadata": decision.metadata,
                "content_hash": decision.content_hash,
                "arm": decision.arm,
                "served_by": decision.served_by,
            },
            decision.sensitive_names,
            decision.salt_bytes,
            self.masked_features(decision),
            decision.document_form,
            decision.kept_commitments,
        )

    def row_summary(self, row: dict) -> dict:
        """summary() of a row of SUMMARY_VALUES: the same answer, without a Decision."""
        schema = version_schema(row["model_version_id"], row["model_version__schema_sha256"])
        sensitive = schema.sensitive_names
        values = {name: row[name] for name in _SHOWN_AS_STORED}
        binding = row_binding(row["registered_model_id"], row["request_id"])
        values["inputs"] = merged(row["inputs"], row["sealed_inputs"], binding)
        masked = [] if self.show_sensitive else sorted(sensitive & values["inputs"].keys())
        values["id"] = row["id"]
        values["model"] = row["registered_model__name"]
        values["version"] = row["model_version__version"]
        salt = None if row["salt"] is None else bytes(row["salt"])
        return self._summary(
            values, sensitive, salt, masked, row["document_form"], row["kept_commitments"]
        )

    def _summary(
        self,
        values: dict,
        sensitive: frozenset[str],
        salt: bytes | None,
        masked: list[str],
        form: int | None = None,
        kept: dict | None = None,
    ) -> dict:
        inputs = values["inputs"]
        # Recorded before commitments, a masked value's hash covers it in clear: a
        # dictionary of candidates would find it, so the hash is withheld.
        hash_shown = salt is not None or not masked or form is not None
        return {
            "id": values["id"],
            "model": values["model"],
            "version": values["version"],
            "request_id": values["request_id"],
            "subject_ref": values["subject_ref"],
            "inputs": {k: (MASK if k in masked else v) for k, v in inputs.items()},
            "masked_features": masked,
            "prediction": values["prediction"],
            "score": values["score"],
            "predicted_at": values["predicted_at"],
            "recorded_at": values["recorded_at"],
            "source": values["source"],
            "metadata": values["metadata"],
            # Served by the app itself: its arm, and for a shadow one the served decision.
            "arm": values["arm"],
            "served_by": values["served_by"],
            "content_hash": values["content_hash"] if hash_shown else None,
            # The commitment to the sensitive inputs that the content hash covers
            # (hashing.decision_document); none before commitments.
            "sensitive_inputs_commitment": None
            if salt is None and kept is None
            else commitment(salt, {k: v for k, v in inputs.items() if k in sensitive})
            if kept is None
            else kept["sensitive_inputs"],
            "salt": salt.hex() if salt is not None and self.show_sensitive else None,
            **self._form_fields(inputs, sensitive, salt, form, kept),
        }

    @staticmethod
    def _form_fields(
        inputs: dict, sensitive: frozenset[str], salt: bytes | None, form: int | None, kept
    ) -> dict:
        """Document form 2 (hashing.py): the commitment to the non-sensitive inputs and the
        salt derived for it (which reveals nothing of the sensitive ones' salt), or, once
        erased, the kept commitments and the erasure declaration."""
        if form is None:
            return {"document_form": None, "erased": False}
        if kept is not None:
            return {
                "document_form": form,
                "inputs_commitment": kept["inputs"],
                "inputs_salt": None,
                "erased": True,
                "erasure": kept.get("erasure"),
            }
        assert salt is not None
        return {
            "document_form": form,
            "inputs_commitment": input_commitments(inputs, sensitive, salt)["inputs"],
            "inputs_salt": inputs_salt(salt).hex(),
            "erased": False,
        }


# -- the decision page ---------------------------------------------------------------------


def input_rows(decision: Decision, presenter: DecisionPresenter) -> list[dict]:
    """The inputs with readable labels, masked where the role may not see them; an erased
    decision's read "erased" (they had read "not given", as values never sent)."""
    schema = decision.model_version.parsed_schema
    masked = set(presenter.masked_features(decision))

    def value_and_shown(feature) -> tuple[Any, str]:
        if decision.erased:
            return None, ERASED
        if feature.name in masked:
            return MASK, MASK
        value = decision.full_inputs().get(feature.name)
        return value, feature.format_value(value)  # as a person reads it ("19,211")

    rows = []
    for feature in schema.features:
        value, shown = value_and_shown(feature)
        rows.append(
            {
                "name": feature.name,
                "label": feature.label,
                "value": value,
                "shown": shown,
                "masked": not decision.erased and feature.name in masked,
                "sensitive": feature.sensitive,
                "protected": feature.protected,
            }
        )
    return rows
