"""Mapping between raw schema features and what a model's estimator sees.

- `split_pipeline` separates a scikit-learn Pipeline into its preprocessing and
  final estimator.
- `source_features` tells, for every column the preprocessing produces, which
  raw feature it came from, read from the fitted transformers' structure, so
  attributions of one-hot columns can be summed back onto their feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import OneToOneFeatureMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

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
