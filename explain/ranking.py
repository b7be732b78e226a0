"""Features ranked by decreasing |attribution|, ties broken by name: one row (a dict) or a
whole batch (a matrix) at once. Pure (NumPy only), so that the records of results rank
stored attributions exactly as the engine ranked them, without loading the engine's
libraries (pandas, scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOP_FEATURES = 10


def rank_features(attributions: dict[str, float], limit: int = TOP_FEATURES) -> list[str]:
    """Features by decreasing |attribution|, ties broken by name for stable output."""
    return [
        name
        for name, _ in sorted(attributions.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:limit]
    ]


def rank_rows(
    values: np.ndarray, names: Sequence[str], limit: int = TOP_FEATURES
) -> list[list[str]]:
    """rank_features for every row of a (rows x features) matrix at once.

    The same order as rank_features (decreasing |attribution|, ties by name),
    without a Python sort per row: a batch of TreeSHAP rows would spend more
    time ranking than explaining.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return [[] for _ in range(len(values))]
    by_name = np.argsort(np.argsort(np.asarray(names, dtype=object)))  # each name's rank
    keys = (np.broadcast_to(by_name, values.shape), -np.abs(values))
    order = np.lexsort(keys, axis=-1)[:, :limit]
    labels = np.asarray(names, dtype=object)
    ranked: list[list[str]] = labels[order].tolist()
    return ranked
