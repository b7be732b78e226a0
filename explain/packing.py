"""Attributions stored compactly: float64 little-endian, one per feature in the version's
schema order (8 bytes each). Pure (struct and NumPy), so every app may read them."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def pack(attributions: Mapping[str, float], names: Sequence[str]) -> bytes:
    """Attributions as float64 little-endian in the version's feature order (8 bytes each)."""
    if len(attributions) != len(names) or set(attributions) != set(names):
        raise ValueError(
            f"attributions name {sorted(attributions)}, the version's features {sorted(names)}"
        )
    return struct.pack(f"<{len(names)}d", *(attributions[name] for name in names))


def unpack(data: bytes | memoryview, names: Sequence[str]) -> dict[str, float]:
    """pack's inverse (PostgreSQL gives a memoryview, SQLite bytes)."""
    data = bytes(data)
    if len(data) != 8 * len(names):
        raise ValueError(f"{len(data)} bytes of attributions for {len(names)} features")
    return dict(zip(names, struct.unpack(f"<{len(names)}d", data), strict=True))


def unpack_matrix(
    packed_rows: Sequence[bytes | memoryview], width: int
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Many packed rows as one (rows x features) float64 matrix, without a dict per row."""
    if not packed_rows:
        return np.zeros((0, width))
    data = b"".join(bytes(packed) for packed in packed_rows)
    return np.frombuffer(data, dtype="<f8").reshape(-1, width).astype(float)
