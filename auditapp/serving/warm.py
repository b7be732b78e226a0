"""The models a web process serves, loaded once and kept warm while the policy names them.

Loading is explain's (`explain.explainers.cached_context`: the artifact's sha256 checked,
only trusted types, the same per-process cache what-ifs use); this module pins the
versions a model's policy names so that the explainers' small LRU cannot evict a
production model, and lets go of them when a newer revision no longer names them.
Requests still in flight on an older revision keep the objects they hold: a switch
never fails a request, it only stops keeping the old version warm.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connections

from auditapp.errors import Unavailable
from auditapp.registry.artifacts import ArtifactError
from auditapp.registry.models import ModelVersion, RegisteredModel
from auditapp.serving.models import TrafficPolicy
from auditapp.serving.policies import Routing, current_policy, routing_for
from explain import engine
from explain.explainers import cached_context

log = logging.getLogger(__name__)
_lock = threading.Lock()
# model id -> (the newest policy revision seen, {(version id, artifact sha256): its context})
Key = tuple[int, str]
_warm: dict[int, tuple[int | None, dict[Key, engine.ModelContext]]] = {}


def context_for(routing: Routing, model_version: ModelVersion) -> engine.ModelContext:
    """The version's loaded model, pinned for the routing's revision."""
    model_id = model_version.registered_model_id
    with _lock:
        contexts = _pinned(model_id, routing)
        key = (model_version.pk, model_version.artifact_sha256)
        context = contexts.get(key)
    if context is None:
        # Outside the lock: a cold load takes a second; another model's requests go on.
        context = _load(model_version)
        with _lock:
            contexts.setdefault(key, context)
    return context


def _load(model_version: ModelVersion) -> engine.ModelContext:
    """The version loaded, or Unavailable naming it: an artifact changed after registration
    (its sha256), gone from storage, or unreadable is the operator's to fix, never a 500."""
    try:
        return cached_context(model_version)
    except (ArtifactError, OSError) as exc:
        name = f"{model_version.registered_model.name} version {model_version.version}"
        reason = "its artifact file was not found" if isinstance(exc, FileNotFoundError) else exc
        log.error("serving.model_unavailable", extra={"version_id": model_version.pk})
        raise Unavailable(
            f"{name} cannot be loaded ({reason}); nothing was predicted or stored.",
            code="model_unavailable",
        ) from exc


def _pinned(model_id: int, routing: Routing) -> dict[Key, engine.ModelContext]:
    revision, contexts = _warm.get(model_id, (None, {}))
    newer = routing.revision is not None and (revision is None or routing.revision > revision)
    if newer:
        named = {v.pk for v in routing.versions()}
        contexts = {key: c for key, c in contexts.items() if key[0] in named}
        _warm[model_id] = (routing.revision, contexts)
    elif model_id not in _warm:
        _warm[model_id] = (revision, contexts)
    return contexts


def preload() -> list[str]:
    """Load the versions that answer (production, canary, fallback; shadows score in the
    workers) under every model's traffic policy, in this new process: "<model> v<n>" of each.

    A web process calls it as it starts (wsgi.py) so that the first predict after a deploy
    does not pay the cold load (1.8-2.0 s for the demo model). It never raises: what cannot
    be loaded is logged, and the first predict that needs it loads it or answers 503
    naming why.
    """
    loaded = []
    try:
        served = RegisteredModel.objects.filter(
            pk__in=TrafficPolicy.objects.values("registered_model")
        )
        for model in served.order_by("name"):
            routing = routing_for(model, current_policy(model))
            answering = {routing.production, routing.canary, routing.fallback} - {None}
            for version in sorted(answering, key=lambda v: v.pk):
                try:
                    context_for(routing, version)
                except Unavailable as exc:
                    log.warning("serving.preload_failed reason=%s", exc)
                    continue
                loaded.append(f"{model.name} v{version.version}")
    except Exception:  # the database down at start-up: the first predicts load instead
        log.exception("serving.preload_failed")
    log.info("serving.preloaded versions=%s", ",".join(loaded) or "none")
    return loaded


def preload_at_start() -> list[str]:
    """preload() if ATTEST_SERVING_PRELOAD, then the connection it used closed: a process
    that forks after loading the app (gunicorn --preload) must not share it."""
    if not settings.ATTEST_SERVING_PRELOAD:
        return []
    try:
        return preload()
    finally:
        connections.close_all()


def warm_versions(model_id: int) -> list[int]:
    """The version ids this process keeps loaded for a model (tests, the README's sizing)."""
    with _lock:
        return sorted(pk for pk, _ in _warm.get(model_id, (None, {}))[1])


def clear() -> None:
    with _lock:
        _warm.clear()
