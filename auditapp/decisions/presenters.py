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
            "content_hash": decision.content_hash,
        }

    def detail(self, decision: Decision) -> dict:
        data = self.summary(decision)
        data["artifact_sha256"] = decision.model_version.artifact_sha256
        data["client"] = decision.client
        data["explanations"] = {
            explanation.method: explanation_json(explanation)
            for explanation in decision.explanations.all()
        }
        return data


def explanation_json(explanation) -> dict:
    data = {"status": explanation.status, "attempts": explanation.attempts}
    if explanation.status == explanation.DONE:
        data.update(
            explainer=explanation.explainer,
            library_version=explanation.library_version,
            output_space=explanation.output_space,
            base_value=explanation.base_value,
            attributions=explanation.attributions,
            top_features=explanation.top_features,
            quality=explanation.quality,
            config=explanation.config,
            seed=explanation.seed,
            duration_ms=explanation.duration_ms,
        )
    if explanation.error:
        data["error"] = explanation.error
    return data
