"""Decisions as the API shows them, with sensitive features masked by role."""

from __future__ import annotations

from auditapp.accounts import roles
from auditapp.decisions.models import Decision

MASK = "[masked]"


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
        return sorted(self._sensitive[version.pk] & decision.inputs.keys())

    def summary(self, decision: Decision) -> dict:
        masked = self.masked_features(decision)
        inputs = {k: (MASK if k in masked else v) for k, v in decision.inputs.items()}
        salt = decision.salt_bytes
        # Recorded before commitments, a masked value's hash covers it in clear: a
        # dictionary of candidates would find it, so the hash is withheld.
        hash_shown = salt is not None or not masked
        return {
            "id": decision.pk,
            "model": decision.registered_model.name,
            "version": decision.model_version.version,
            "request_id": decision.request_id,
            "subject_ref": decision.subject_ref,
            "inputs": inputs,
            "masked_features": masked,
            "prediction": decision.prediction,
            "score": decision.score,
            "predicted_at": decision.predicted_at,
            "recorded_at": decision.recorded_at,
            "source": decision.source,
            "metadata": decision.metadata,
            "content_hash": decision.content_hash if hash_shown else None,
            "sensitive_inputs_commitment": decision.sensitive_commitment(),
            "salt": salt.hex() if salt is not None and self.show_sensitive else None,
        }


# -- the decision page ---------------------------------------------------------------------


def input_rows(decision: Decision, presenter: DecisionPresenter) -> list[dict]:
    """The inputs with readable labels, masked where the role may not see them."""
    schema = decision.model_version.parsed_schema
    masked = set(presenter.masked_features(decision))
    return [
        {
            "name": feature.name,
            "label": feature.label,
            "value": MASK if feature.name in masked else decision.inputs.get(feature.name),
            # As a person reads it ("19,211"), formatted per the schema.
            "shown": MASK
            if feature.name in masked
            else feature.format_value(decision.inputs.get(feature.name)),
            "masked": feature.name in masked,
            "sensitive": feature.sensitive,
            "protected": feature.protected,
        }
        for feature in schema.features
    ]
