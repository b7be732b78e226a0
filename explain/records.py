"""Explanation results as records: their compact storage and the one document a result's
hash covers.

Plain functions, no ORM and no Celery: the write path (explain.results, called by
the workers), the migration of older rows and a verifier all use these, so that a
result reads back as exactly what was written.

The document (result_document) is built from a result's stored values; a verifier
reads VERIFIER_COLUMNS of ExplanationResult (`.values(*VERIFIER_COLUMNS)`), turns each
row into those values with stored_values and the version's feature names, and
rebuilds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from auditapp.hashing import canonical_time, sha256_hex
from auditapp.registry.agreement import judge_agreement
from explain.engine import score_quality
from explain.packing import unpack
from explain.ranking import rank_features

# How many of a decision's largest |attributions| the top_reason search keeps (TopReasons).
STORED_TOP = 3
# What a result's document holds (result_document's argument has these keys).
DOCUMENT_FIELDS = (
    "decision_id",
    "method",
    "explainer",
    "library_version",
    "output_space",
    "config",
    "attributions",
    "base_value",
    "quality",
    "seed",
    "computed_at",
)
# What a verifier reads of an ExplanationResult (ORM paths, for .values()) to rebuild its
# document; the feature names come from the version's schema (config__model_version_id).
VERIFIER_COLUMNS = (
    "id",
    "decision_id",
    "base_value",
    "attributions",
    "quality",
    "seed",
    "computed_at",
    "config__method",
    "config__explainer",
    "config__library_version",
    "config__output_space",
    "config__content",
    "config__version_hashes",
    "config__model_version_id",
    "config__model_version__artifact_sha256",
    "config__model_version__background_sha256",
    "config__model_version__schema_sha256",  # which feature names to read (see results.py)
)
# The configuration keys that repeat the version's own hashes (not stored per configuration).
VERSION_HASH_KEYS = ("background_sha256", "artifact_sha256")


def result_document(values: Mapping[str, Any]) -> dict[str, Any]:
    """The document that stands for one computed result (what its hash covers).

    `values` are DOCUMENT_FIELDS: the configuration's content (not its id), the
    attributions keyed by feature name, computed_at a datetime. Numbers are
    normalised so that a value reads back identically from any database: -0.0 is
    0.0 (PostgreSQL's jsonb has no negative zero).
    """
    return {
        "decision_id": int(values["decision_id"]),
        "method": values["method"],
        "explainer": values["explainer"],
        "library_version": values["library_version"],
        "output_space": values["output_space"],
        "config": _normalised(values["config"]),
        "attributions": _normalised(values["attributions"]),
        "base_value": _normalised(values["base_value"]),
        "quality": _normalised(values["quality"]),
        "seed": values["seed"],
        "computed_at": _moment(values["computed_at"]),
    }


def result_hash(values: Mapping[str, Any]) -> str:
    """sha256 of the result's document, as every sealed record is hashed."""
    return sha256_hex(result_document(values))


def stored_values(row: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The document's values from a stored row (VERIFIER_COLUMNS) and the version's names."""
    return {
        "decision_id": row["decision_id"],
        "method": row["config__method"],
        "explainer": row["config__explainer"],
        "library_version": row["config__library_version"],
        "output_space": row["config__output_space"],
        "config": full_config(
            row["config__content"],
            row["config__version_hashes"],
            row["config__model_version__artifact_sha256"],
            row["config__model_version__background_sha256"],
        ),
        "attributions": unpack(row["attributions"], names),
        "base_value": row["base_value"],
        "quality": row["quality"],
        "seed": row["seed"],
        "computed_at": row["computed_at"],
    }


def _normalised(value):
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be recorded")
        return 0.0 if value == 0 else value
    if isinstance(value, dict):
        return {key: _normalised(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_normalised(item) for item in value]
    return value


def _moment(value) -> str:
    return canonical_time(value) if isinstance(value, datetime) else value


def ranked(attributions: Mapping[str, float]) -> list[str]:
    """The features by decreasing |attribution| as the engine ranks them (derived, not stored)."""
    return rank_features(dict(attributions))


def with_agreement(quality: dict, agreement: dict | None) -> dict:
    """A LIME result's quality as shown: with its agreement with SHAP, kept on the work row."""
    return {**quality, "agreement_with_shap": agreement} if agreement else quality


# -- what a row keeps of its quality and agreement, and what is derived when read -------------
# A SHAP result's tolerances are its configuration's (one row per version and settings), and
# the recorded-score check follows from the model's score it keeps, the decision's recorded
# score and that tolerance: stored once, or not at all, instead of on every row.
ADDITIVITY_TOLERANCE = "additivity_tolerance"
SCORE_TOLERANCE = "score_tolerance"
SCORE_CHECK = ("recorded_score", "score_error", SCORE_TOLERANCE, "score_ok")
# Of SHAP-LIME agreement, a LIME work row keeps the figures and the verdict's two booleans
# (what the compliance report counts); the thresholds and the sentence come from the
# version's settings when read (shown_agreement).
AGREEMENT_FIGURES = ("top_k", "top_k_overlap", "rank_correlation")  # engine.agreement's
STORED_AGREEMENT = (*AGREEMENT_FIGURES, "judged", "agrees")


def stored_quality(quality: dict, config: Mapping[str, Any]) -> dict:
    """What a result row keeps of its quality: less the tolerances its configuration holds and
    the score check derived from them (shown_quality puts them back)."""
    dropped: set[str] = set()
    if ADDITIVITY_TOLERANCE in quality and quality[ADDITIVITY_TOLERANCE] == config.get(
        ADDITIVITY_TOLERANCE
    ):
        dropped.add(ADDITIVITY_TOLERANCE)
    if (
        "model_score" in quality
        and SCORE_TOLERANCE in quality
        and quality[SCORE_TOLERANCE] == config.get(SCORE_TOLERANCE)
    ):
        dropped.update(SCORE_CHECK)
    return {k: v for k, v in quality.items() if k not in dropped} if dropped else quality


def shown_quality(
    stored: dict, config: Mapping[str, Any], recorded_score: Callable[[], float | None]
) -> dict:
    """A result's quality as computed, from what its row keeps (stored_quality), its
    configuration and the decision's recorded score (asked for only when needed)."""
    quality = dict(stored)
    configured = ADDITIVITY_TOLERANCE in config and ADDITIVITY_TOLERANCE not in stored
    if configured and "additivity_error" in stored:
        quality[ADDITIVITY_TOLERANCE] = config[ADDITIVITY_TOLERANCE]
    if "model_score" in stored and SCORE_TOLERANCE not in stored and SCORE_TOLERANCE in config:
        recorded = recorded_score()
        if recorded is not None and stored["model_score"] is not None:
            quality.update(score_quality(stored["model_score"], recorded, config[SCORE_TOLERANCE]))
    return quality


def stored_agreement(agreement: dict | None) -> dict | None:
    """What a LIME work row keeps of its agreement with SHAP (STORED_AGREEMENT)."""
    if agreement is None:
        return None
    return {key: agreement[key] for key in STORED_AGREEMENT if key in agreement}


def shown_agreement(
    stored: dict | None, fidelity_r2: float | None, thresholds: Callable[[], Mapping[str, Any]]
) -> dict | None:
    """The agreement with its verdict in words, from what the row keeps and the version's
    thresholds (asked for only when needed: rows written before the verdict was trimmed
    carry it whole)."""
    if not stored or "why" in stored or "judged" not in stored:
        return stored
    figures = {key: stored[key] for key in AGREEMENT_FIGURES if key in stored}
    return {**figures, **judge_agreement(figures, fidelity_r2, dict(thresholds()))}


def stripped_config(config: dict, artifact_sha256: str, background_sha256: str):
    """(content, version_hashes): the configuration less the hashes its version holds."""
    if all(key in config for key in VERSION_HASH_KEYS) and (
        config["artifact_sha256"],
        config["background_sha256"],
    ) == (artifact_sha256, background_sha256):
        return {k: v for k, v in config.items() if k not in VERSION_HASH_KEYS}, True
    return config, False


def full_config(
    content: dict, version_hashes: bool, artifact_sha256: str, background_sha256: str
) -> dict:
    """stripped_config's inverse."""
    if not version_hashes:
        return content
    return {**content, "background_sha256": background_sha256, "artifact_sha256": artifact_sha256}


def config_digest(
    method: str, explainer: str, library_version: str, output_space: str, config: dict
) -> str:
    """What makes a configuration one row (per model version): sha256 of all of it."""
    return sha256_hex(
        {
            "method": method,
            "explainer": explainer,
            "library_version": library_version,
            "output_space": output_space,
            "config": config,
        }
    )
