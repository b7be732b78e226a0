"""Raw input rows as the frames a model takes, and categorical columns as numeric codes.

Apart from `features` (the scikit-learn side) so that what stores and reads explanations
loads pandas alone, not scikit-learn.

- `input_frame` builds the frame `Schema.frame` builds, faster.
- `CategoryCodes` turns categorical columns into integer codes and back, for
  methods (LIME, model-agnostic SHAP) that perturb numeric arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from explain.schema import Schema

if TYPE_CHECKING:  # pandas loads when a frame is built (explain/schema.py says why)
    import pandas as pd


def input_frame(schema: Schema, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The frame Schema.frame builds from raw input rows (same columns and dtypes), faster.

    Numbers go through one NumPy conversion instead of a pandas Series each (an
    all-numeric schema becomes one 2-D block): a batch of TreeSHAP rows would
    otherwise spend a third of its time building its frame.
    """
    import pandas as pd

    names = schema.names
    try:
        table = [[row[name] for name in names] for row in rows]
        if all(f.type == "numeric" for f in schema.features):
            matrix = np.array(table, dtype=float).reshape(len(rows), len(names))
            return pd.DataFrame(matrix, columns=names)
        columns: dict[str, Any] = {}
        for feature, values in zip(schema.features, zip(*table, strict=True), strict=True):
            if feature.type == "numeric":
                columns[feature.name] = np.array(values, dtype=float)
            else:
                columns[feature.name] = _column(feature.type, list(values))
    except (KeyError, TypeError, ValueError):
        return schema.frame(rows)  # a missing or odd value: the reference path copes or says why
    return pd.DataFrame(columns)


def _column(
    kind: str, values: list[Any]
) -> pd.Series | np.ndarray | pd.api.extensions.ExtensionArray:
    """One column exactly as Schema.frame builds it; a NumPy array where its dtype is
    NumPy's: a Series per column was half of a one-row frame's time (the demo schema's
    row: 348 µs, now 184 µs). Text stays a Series of objects: from an array, pandas
    would infer its own string dtype."""
    import pandas as pd

    if kind == "categorical":
        return pd.Series(values, dtype=object)
    if kind == "boolean":
        return pd.array(values, dtype="boolean") if None in values else np.array(values, bool)
    if kind == "integer" and None not in values:
        return np.array(values, dtype="int64")
    return np.array(values, dtype="float64")


class CategoryCodes:
    """Categorical features as integer codes (their index in the schema's categories)."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.categorical = {
            i: list(f.categories) for i, f in enumerate(schema.features) if f.type == "categorical"
        }
        self.booleans = [i for i, f in enumerate(schema.features) if f.type == "boolean"]

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        columns = []
        for i, feature in enumerate(self.schema.features):
            values = frame[feature.name]
            if i in self.categorical:
                lookup = {c: k for k, c in enumerate(self.categorical[i])}
                columns.append(values.map(lookup).astype(float).to_numpy())
            else:
                columns.append(values.astype(float).to_numpy())
        return np.column_stack(columns)

    def decode(self, array: np.ndarray) -> pd.DataFrame:
        """Codes back to model inputs. Called for every model evaluation: keep it vectorised."""
        import pandas as pd

        array = np.asarray(array, dtype=float)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        frame = pd.DataFrame(array, columns=self.schema.names, copy=False)
        for i, categories in self.categorical.items():
            codes = np.clip(np.rint(array[:, i]), 0, len(categories) - 1).astype(int)
            frame.isetitem(i, np.asarray(categories, dtype=object)[codes])
        for i in self.booleans:
            frame.isetitem(i, array[:, i] >= 0.5)
        return frame
