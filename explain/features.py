"""Mapping between raw schema features and what a model's estimator sees.

- `split_pipeline` separates a scikit-learn Pipeline into its preprocessing and
  final estimator.
- `source_features` tells, for every column the preprocessing produces, which
  raw feature it came from, read from the fitted transformers' structure, so
  attributions of one-hot columns can be summed back onto their feature.
- `PerFeatureTransform` assembles the preprocessing's output for rows mixed from
  known rows, feature by feature, where each output column is a function of its
  raw feature alone (model-agnostic SHAP evaluates thousands of such rows a row).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
from sklearn.base import OneToOneFeatureMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)

from explain.schema import Schema


class FeatureMappingError(ValueError):
    """The preprocessing's output columns cannot be traced back to raw features."""


def split_pipeline(model: Any) -> tuple[Any | None, Any]:
    """(preprocessing or None, final estimator)."""
    if isinstance(model, Pipeline) and len(model.steps) > 1:
        return model[:-1], model.steps[-1][1]
    if isinstance(model, Pipeline):
        return None, model.steps[-1][1]
    return None, model


def _resolve_columns(columns: Any, names: list[str]) -> list[str]:
    if isinstance(columns, slice):
        return names[columns]
    if callable(columns):
        raise FeatureMappingError("column selectors given as callables are not supported")
    columns = list(np.atleast_1d(columns))
    if columns and isinstance(columns[0], bool | np.bool_):
        return [n for n, keep in zip(names, columns, strict=True) if keep]
    if columns and isinstance(columns[0], int | np.integer):
        return [names[i] for i in columns]
    return [str(c) for c in columns]


def _map_transformer(transformer: Any, input_names: list[str]) -> list[str]:
    """For each output column of a fitted transformer, the input column it comes from.

    Read from the fitted transformer's structure (a one-hot encoder's category
    blocks, a one-to-one transformer's identity), never guessed from column names:
    a feature named like another's prefix ("income", "income_band") must not steal
    its columns. A transformer that mixes inputs into one column cannot be mapped.
    """
    if transformer == "passthrough":
        return list(input_names)
    if transformer == "drop":
        return []
    if isinstance(transformer, Pipeline):
        names = list(input_names)
        for _, step in transformer.steps:
            if step is None or step == "passthrough":
                continue
            names = _map_transformer(step, names)
        return names
    if isinstance(transformer, ColumnTransformer):
        return _map_column_transformer(transformer, input_names)
    if isinstance(transformer, OneHotEncoder):
        return _map_one_hot(transformer, input_names)
    if isinstance(transformer, SimpleImputer):
        return _map_imputer(transformer, input_names)
    output_count = _output_count(transformer, input_names)
    if len(input_names) == 1:
        return [input_names[0]] * output_count
    if _one_to_one(transformer) and output_count == len(input_names):
        return list(input_names)
    raise FeatureMappingError(
        f"{type(transformer).__name__} combines {len(input_names)} input columns; its output "
        "columns cannot be traced back to single raw features"
    )


def _one_to_one(transformer: Any) -> bool:
    """Column i out comes from column i in: scalers, ordinal encoders, and a function
    transformer that is the identity (a ColumnTransformer's passthrough remainder) or
    is declared one-to-one."""
    if isinstance(transformer, FunctionTransformer):
        return transformer.func is None or transformer.feature_names_out == "one-to-one"
    return isinstance(transformer, OneToOneFeatureMixin)


def _output_count(transformer: Any, input_names: list[str]) -> int:
    try:
        return len(transformer.get_feature_names_out(input_names))
    except Exception as exc:
        raise FeatureMappingError(
            f"{type(transformer).__name__} does not report its output columns ({exc})"
        ) from exc


def _map_one_hot(encoder: OneHotEncoder, input_names: list[str]) -> list[str]:
    """One block of columns per input, in input order, sized as the fitted encoder sizes it."""
    drop = getattr(encoder, "drop_idx_", None)
    infrequent = getattr(encoder, "infrequent_categories_", None)
    mapped = []
    for i, (name, categories) in enumerate(zip(input_names, encoder.categories_, strict=True)):
        size = len(categories)
        if infrequent is not None and infrequent[i] is not None:
            size -= len(infrequent[i]) - 1  # the infrequent ones share one column
        if drop is not None and drop[i] is not None:
            size -= 1
        mapped += [name] * size
    if len(mapped) != _output_count(encoder, input_names):
        raise FeatureMappingError("the one-hot encoder's column blocks do not match its output")
    return mapped


def _map_imputer(imputer: SimpleImputer, input_names: list[str]) -> list[str]:
    """The imputed columns it keeps (an all-missing one is dropped), then its indicators."""
    keep = imputer.keep_empty_features or imputer.strategy == "constant"
    mapped = [
        name
        for name, statistic in zip(input_names, imputer.statistics_, strict=True)
        if keep or not pd.isna(statistic)
    ]
    if imputer.add_indicator:
        mapped += [input_names[i] for i in imputer.indicator_.features_]
    if len(mapped) != _output_count(imputer, input_names):
        raise FeatureMappingError("the imputer's output columns do not match its inputs")
    return mapped


def _map_column_transformer(transformer: ColumnTransformer, input_names: list[str]) -> list[str]:
    mapped: list[str] = [""] * sum(s.stop - s.start for s in transformer.output_indices_.values())
    for name, fitted, columns in transformer.transformers_:
        indices = transformer.output_indices_[name]
        if indices.stop == indices.start:
            continue
        sources = _map_transformer(fitted, _resolve_columns(columns, input_names))
        if len(sources) != indices.stop - indices.start:
            raise FeatureMappingError(f"transformer {name!r} produced an unexpected column count")
        mapped[indices] = sources
    return mapped


def source_features(preprocessing: Any, schema: Schema) -> list[str]:
    """The raw feature each transformed column comes from, in transformed column order."""
    mapped = _map_transformer(preprocessing, schema.names)
    unknown = sorted(set(mapped) - set(schema.names))
    if unknown:
        raise FeatureMappingError(f"transformed columns trace back to unknown inputs {unknown}")
    return mapped


def aggregation_matrix(sources: list[str], names: list[str]) -> np.ndarray:
    """A 0/1 matrix M (transformed x raw): raw attributions = transformed attributions @ M."""
    matrix = np.zeros((len(sources), len(names)))
    position = {name: i for i, name in enumerate(names)}
    for column, source in enumerate(sources):
        matrix[column, position[source]] = 1.0
    return matrix


def dense(values: Any) -> np.ndarray:
    return np.asarray(values.toarray() if hasattr(values, "toarray") else values, dtype=float)


# --- rows mixed from known rows, transformed feature by feature -------------------------------

# Transformers whose output for a row depends on that row's value of each input column alone
# (their fitted statistics aside): the preprocessing of a mixed row is then the mix of the
# preprocessed rows it was mixed from. A user's own transformer may not be, whatever it
# declares, so only these are trusted, and the assembly is checked against the real
# transform before it is used (PerFeatureTransform.build). An imputer's missing-value
# indicators, too, read one column each.
COLUMNWISE = (
    OneHotEncoder,
    OrdinalEncoder,
    SimpleImputer,
    StandardScaler,
    MinMaxScaler,
    MaxAbsScaler,
    RobustScaler,
)
CHECK_SEED = 0
# What makes transforming thousands of mixed rows slow: an encoder reading a DataFrame's
# columns of categories (a second a decision for a one-hot MLP). Without one, looking the
# features up costs more than transforming them (30 scaled numbers: 41 ms a decision
# assembled, 24 ms transformed), so a preprocessing of scalers alone is run as it is.
ENCODERS = (OneHotEncoder, OrdinalEncoder)


def _leaves(transformer: Any) -> Iterator[Any]:
    """The transformers a Pipeline or ColumnTransformer applies, nested ones opened."""
    if isinstance(transformer, Pipeline):
        for _, step in transformer.steps:
            yield from _leaves(step)
    elif isinstance(transformer, ColumnTransformer):
        for _, fitted, _ in transformer.transformers_:
            yield from _leaves(fitted)
    else:
        yield transformer


def _columnwise(leaf: Any) -> bool:
    """Whether each output value depends on one input value of the same row alone."""
    if leaf in ("passthrough", "drop") or leaf is None:
        return True
    if isinstance(leaf, FunctionTransformer):
        return leaf.func is None
    return isinstance(leaf, COLUMNWISE)


class PerFeatureTransform:
    """The preprocessing's output for rows whose every raw value is one that a known row
    holds in that feature, assembled from the known rows' transformed columns.

    Model-agnostic SHAP evaluates the pipeline on rows mixed from the explained row and the
    background (about 500 x the background's rows a decision); transforming each of them
    again (a ColumnTransformer on a DataFrame) cost a second a decision for a one-hot MLP.
    Here the background is transformed once and the explained row once; a mixed row's
    columns are looked up by its values. Rows are given as numbers, a category as its
    code (explain.frames.CategoryCodes)."""

    def __init__(self, transform: Any, sources: list[str], names: list[str], known: np.ndarray):
        self._transform = transform  # numbers -> the preprocessing's output
        self._blocks = [np.flatnonzero(np.array(sources) == name) for name in names]
        self._known = np.asarray(known, dtype=float)
        real = transform(self._known)
        # What the estimator receives, as it receives it: sparse or not, and its dtype.
        self._sparse, self._dtype = scipy.sparse.issparse(real), real.dtype
        self._known_out = dense(real)
        self.covered = sum(len(b) for b in self._blocks) == self._known_out.shape[1]
        self._tables: list[tuple[np.ndarray, np.ndarray]] = []
        self.use_row(self._known[0])

    @classmethod
    def build(
        cls, preprocessing: Any, schema: Schema, transform: Any, known: np.ndarray
    ) -> PerFeatureTransform | None:
        """The assembly for this preprocessing, or None where it cannot serve: a transformer
        not known to work column by column, no encoder (nothing to gain), output columns
        that cannot be traced, an output that is not an array, or assembled rows that
        differ from the real transform's on rows mixed from the known ones (a seeded check,
        exact to the bit)."""
        if preprocessing is None or len(known) < 2:
            return None
        leaves = list(_leaves(preprocessing))
        if not all(_columnwise(leaf) for leaf in leaves):
            return None
        if not any(isinstance(leaf, ENCODERS) for leaf in leaves):
            return None  # scaling numbers costs less than looking them up
        try:
            sources = source_features(preprocessing, schema)
        except FeatureMappingError:
            return None
        if isinstance(transform(np.asarray(known[:1], dtype=float)), pd.DataFrame):
            return None
        assembly = cls(transform, sources, schema.names, known)
        return assembly if assembly.covered and assembly.matches_real_transform() else None

    def use_row(self, row: np.ndarray) -> None:
        """The row being explained: its values join the known ones."""
        row = np.asarray(row, dtype=float).reshape(1, -1)
        values = np.vstack([self._known, row])
        out = np.vstack([self._known_out, dense(self._transform(row))])
        tables = []
        for j, block in enumerate(self._blocks):
            keys, first = np.unique(values[:, j], return_index=True)
            tables.append((keys, out[first][:, block]))
        self._tables = tables  # whole, in one assignment: a reader sees the old or the new

    def __call__(self, rows: np.ndarray) -> Any:
        """The preprocessing's output for `rows`, or None if one holds a value no known row
        does in that feature (the caller then transforms them for real)."""
        rows = np.asarray(rows, dtype=float)
        out = np.empty((len(rows), self._known_out.shape[1]))
        for j, (keys, table) in enumerate(self._tables):
            column = rows[:, j]
            at = np.minimum(np.searchsorted(keys, column), len(keys) - 1)
            if not np.array_equal(keys[at], column, equal_nan=True):
                return None
            out[:, self._blocks[j]] = table[at]
        out = out.astype(self._dtype, copy=False)  # exact: the values came from that dtype
        return scipy.sparse.csr_matrix(out) if self._sparse else out

    def _mixed(self) -> np.ndarray:
        """Rows mixed at random (seeded) from pairs of known rows, as shap's masker mixes."""
        generator = np.random.default_rng(CHECK_SEED)
        partner = np.roll(self._known, 1, axis=0)
        return np.where(generator.random(self._known.shape) < 0.5, self._known, partner)

    def matches_real_transform(self) -> bool:
        """Mixed rows assembled and transformed for real: equal to the bit, or this
        preprocessing is not taken apart."""
        mixed = self._mixed()
        assembled = self(mixed)
        return assembled is not None and np.array_equal(
            dense(assembled), dense(self._transform(mixed)), equal_nan=True
        )
