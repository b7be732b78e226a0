"""Models and versions looked up for an actor: what the actor may not see is "not found".

Nothing outside looks a scoped object up by name or id alone; answering 404
rather than 403 keeps a hidden model's existence unrevealed.
"""

from __future__ import annotations

from auditapp.accounts import roles
from auditapp.errors import InvalidInput, NotFound
from auditapp.registry.models import ModelVersion, RegisteredModel


def get_model_for_actor(actor: roles.Actor, name: str) -> RegisteredModel:
    actor.require(roles.READ_MODELS)
    model = RegisteredModel.objects.visible_to(actor).filter(name=name).first()
    if model is None:
        raise NotFound(f"No model named {name!r}.")
    return model


def refuse_unseen_model_filter(actor: roles.Actor, params) -> None:
    """A list's ?model= must name a model the actor may see, and its ?version= one of that
    model's versions: a misspelt "credt" had answered "none found", read as "none decided".
    A hidden model is refused in the same words as a missing one, its versions never
    looked at. Lists ask it only when they found nothing (what they found names a model
    that is), so a search that finds makes no round trip for it."""
    name, version = params.get("model"), params.get("version")
    if not name:
        return
    model = RegisteredModel.objects.visible_to(actor).filter(name=name).first()
    if model is None:
        raise InvalidInput.named(
            "model", f"names no model you may see ({name!r})", code="invalid_parameters"
        )
    if version and not model.versions.filter(version=version).exists():
        raise InvalidInput.named(
            "version", f"names no version of {name} ({version!r})", code="invalid_parameters"
        )


def get_version_for_actor(actor: roles.Actor, name: str, version: str) -> ModelVersion:
    actor.require(roles.READ_MODELS)
    model_version = (
        ModelVersion.objects.select_related("registered_model")
        .filter(
            registered_model__in=RegisteredModel.objects.visible_to(actor),
            registered_model__name=name,
            version=version,
        )
        .first()
    )
    if model_version is None:
        raise NotFound(f"No version {version!r} of a model named {name!r}.")
    return model_version
