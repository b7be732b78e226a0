"""The feature schema of a model version: parsing it, and checking values against it.

This is the one place that says what a valid input, prediction and score are;
ingestion, batch import and background samples all use it. It lives beside the
explanation engine, which reads it, and imports no Django: the engine runs
without the project loaded (tests/explain/test_engine_import.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    import pandas as pd

FEATURE_TYPES = ("numeric", "integer", "boolean", "categorical")
FEATURE_KEYS = {
    "name",
    "type",
    "label",
    "description",
    "min",
    "max",
    "categories",
    "nullable",
    "protected",
    "sensitive",
    "groups",  # bin edges of a numeric protected attribute, for fairness figures
    "unit",  # shown after a number: "EUR", "years"
    "decimals",  # digits after the point when a number is shown to people
    # Actionability, for counterfactuals (explain/counterfactual.py): what a person could change.
    "immutable",  # never changed by a counterfactual (protected features always are)
    "direction",  # "increase" or "decrease": the only way a numeric feature may move
    "step",  # a numeric feature's values move on a grid of this step (from `min`, else 0)
}
DIRECTIONS = ("increase", "decrease")
MAX_DECIMALS = 6
TARGET_TYPES = ("classification", "regression")
MAX_INT = 2**63
TRUE_TEXT = {"true", "1", "yes", "t", "y"}
FALSE_TEXT = {"false", "0", "no", "f", "n"}


class SchemaError(ValueError):
    """The schema itself is malformed; `problems` lists every reason."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Feature:
    name: str
    type: str
    label: str
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    nullable: bool = False
    protected: bool = False
    sensitive: bool = False
    unit: str = ""
    decimals: int | None = None
    immutable: bool = False  # declared, or by default for a protected feature
    direction: str | None = None  # "increase" / "decrease", numeric features only
    step: float | None = None  # numeric features only; a whole number on integer features

    @property
    def mutable(self) -> bool:
        """Whether a counterfactual may change this feature: never a protected one."""
        return not (self.immutable or self.protected)

    def format_value(self, value: Any) -> str:
        """The value as a person reads it: "19,211 EUR", "yes", "not given".

        Numbers get thousands separators and the schema's decimals and unit; without
        declared decimals an integer-typed feature shows none, and a numeric one shows
        whole numbers from 1,000 up and at most two decimals below (trailing zeros off).
        """
        if value is None:
            return "not given"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if not _is_number(value):
            return str(value)
        if self.decimals is not None:
            text = f"{value:,.{self.decimals}f}"
        elif self.type == "integer" or float(value).is_integer() or abs(value) >= 1000:
            text = f"{round(value):,}"
        else:
            text = f"{value:,.2f}".rstrip("0").rstrip(".")
        if text.startswith("-") and not text.strip("-0.,"):
            text = text[1:]  # "-0.00": rounded to nothing, no sign
        return f"{text} {self.unit}" if self.unit else text

    def value_error(self, value: Any) -> str | None:
        """Why `value` is not acceptable for this feature, or None when it is."""
        if value is None:
            return None if self.nullable else "is null but the feature is not nullable"
        if self.type == "categorical":
            if not isinstance(value, str) or value not in self._category_set:
                return (
                    f"{value!r} is not a known category (expected one of {list(self.categories)})"
                )
            return None
        if self.type == "boolean":
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if not _is_number(value):
            return f"must be a number, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if isinstance(value, int) and not -MAX_INT <= value < MAX_INT:
            return "is too large (beyond 64-bit integers)"
        if self.type == "integer" and isinstance(value, float) and not value.is_integer():
            return f"must be an integer, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"must be ≥ {self.minimum}, got {value!r}"
        if self.maximum is not None and value > self.maximum:
            return f"must be ≤ {self.maximum}, got {value!r}"
        return None

    @cached_property
    def _category_set(self) -> frozenset[str]:
        return frozenset(self.categories)

    @cached_property
    def accepts(self) -> Callable[[Any], bool]:
        """A fast yes/no check; value_error says why when it is no (or to be sure)."""
        nullable = self.nullable
        if self.type == "categorical":
            categories = self._category_set
            return lambda v: (type(v) is str and v in categories) or (v is None and nullable)
        if self.type == "boolean":
            return lambda v: type(v) is bool or (v is None and nullable)
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        if self.type == "integer":
            return lambda v: (
                (type(v) is int and low <= v <= high and -MAX_INT <= v < MAX_INT)
                or (v is None and nullable)
            )
        return lambda v: (
            (type(v) is float and -math.inf < v < math.inf and low <= v <= high)
            or (type(v) is int and low <= v <= high and -MAX_INT <= v < MAX_INT)
            or (v is None and nullable)
        )

    def from_text(self, text: str) -> tuple[Any, str | None]:
        """Convert a CSV cell to this feature's type; (value, error)."""
        text = text.strip()
        if text == "" or (
            text.lower() in {"null", "none", "na", "nan"} and self.type != "categorical"
        ):
            return None, None
        if self.type == "categorical":
            return text, None
        if self.type == "boolean":
            if text.lower() in TRUE_TEXT:
                return True, None
            if text.lower() in FALSE_TEXT:
                return False, None
            return None, f"must be true or false, got {text!r}"
        try:
            number = float(text)
        except ValueError:
            return None, f"must be a number, got {text!r}"
        if self.type == "integer" and number.is_integer():
            return int(number), None
        return number, None


DEFAULT_WORDS = {True: "declined", False: "approved"}  # adverse?, when the schema says no words


@dataclass(frozen=True)
class Target:
    """What the model predicts, and which outcome is good for the person.

    `favourable` is the schema's declared favourable class (target key "favourable").
    Without it, the positive class is taken as the adverse outcome, as Attest always
    did: explanations push towards it and reasons are what pushed there. `wording`
    maps a class to what a person is told ("declined").
    """

    type: str
    classes: tuple[str | int, ...] = ()
    positive_class: str | int | None = None
    favourable: str | int | None = None
    wording: tuple[tuple[str, str], ...] = ()

    @property
    def favourable_class(self) -> str | int | None:
        """The declared favourable class; else, for two classes, the non-positive one."""
        if self.favourable is not None:
            return self.favourable
        if self.type == "classification" and len(self.classes) == 2:
            return next(c for c in self.classes if c != self.positive_class)
        return None

    @property
    def adverse_class(self) -> str | int | None:
        """The one adverse class, when there is one (None: several, or a regression)."""
        if self.type != "classification":
            return None
        if self.favourable is None:
            return self.positive_class
        others = [c for c in self.classes if c != self.favourable]
        return others[0] if len(others) == 1 else None

    @property
    def adverse_sign(self) -> int:
        """+1 when attributions towards the positive class push towards the adverse
        outcome (the default), -1 when the positive class is the favourable one."""
        return -1 if self.favourable is not None and self.favourable == self.positive_class else 1

    @property
    def adverse_name(self) -> str:
        """The adverse outcome named for a sentence: "bad", "not >50K", "a higher value"."""
        if self.type != "classification":
            return "a higher value"
        adverse = self.adverse_class
        return str(adverse) if adverse is not None else f"not {self.favourable}"

    def is_adverse(self, prediction: Any) -> bool | None:
        """Whether a predicted label is the adverse outcome; None when unknown (regression)."""
        if self.type != "classification":
            return None
        if self.favourable is not None:
            return bool(prediction != self.favourable)
        return bool(prediction == self.positive_class)

    def outcome_text(self, prediction: Any) -> str:
        """What a person is told: the schema's wording, "declined"/"approved" when the
        schema declares its favourable class, else the class itself (as before)."""
        words = dict(self.wording)
        if str(prediction) in words:
            return words[str(prediction)]
        if self.favourable is not None and self.type == "classification":
            return DEFAULT_WORDS[prediction != self.favourable]
        return str(prediction)

    def tone(self, prediction: Any) -> str:
        """ "adverse", "favourable" or "" (unknown): the colour of a prediction's pill."""
        if self.type != "classification":
            return ""
        if prediction == self.favourable_class:
            return "favourable"
        return "adverse" if self.is_adverse(prediction) else ""

    def label_from_text(self, text: str) -> Any:
        """A label typed as text (a form, a CSV cell) as this target's value: a class
        (classes may be numbers), or a number for regression; unparseable text stays text
        so that label_error can say what is wrong with it."""
        text = text.strip()
        if self.type == "classification":
            return {str(c): c for c in self.classes}.get(text, text)
        try:
            return float(text)
        except ValueError:
            return text

    def label_error(self, value: Any) -> str | None:
        """Why `value` is not a label of this target (a class, or a number), or None."""
        if self.type == "classification":
            if isinstance(value, bool | dict | list) or value not in self.classes:
                return f"{value!r} is not one of the classes {list(self.classes)}"
            return None
        if not _is_number(value) or not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        return None

    def prediction_errors(self, prediction: Any, score: Any) -> list[tuple[str, str]]:
        errors: list[tuple[str, str]] = []
        if reason := self.label_error(prediction):
            errors.append(("prediction", reason))
        if score is not None:
            if not _is_number(score) or not math.isfinite(score):
                errors.append(("score", f"must be a finite number or null, got {score!r}"))
            elif self.type == "classification" and not 0.0 <= score <= 1.0:
                errors.append(("score", f"must be a probability in [0, 1], got {score!r}"))
        return errors


@dataclass(frozen=True)
class Schema:
    features: tuple[Feature, ...]
    target: Target
    raw: dict[str, Any] = field(compare=False, repr=False)

    @property
    def names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def sensitive_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.features if f.sensitive)

    @cached_property
    def _accepts(self) -> tuple[tuple[str, Callable[[Any], bool]], ...]:
        return tuple((f.name, f.accepts) for f in self.features)

    def input_errors(self, inputs: Any) -> list[tuple[str, str]]:
        """Every problem with a dict of raw inputs, as (field path, reason) pairs."""
        # Fast path for the common case, a valid row; anything else is explained below.
        if type(inputs) is dict and len(inputs) == len(self._accepts):
            try:
                if all(accept(inputs[name]) for name, accept in self._accepts):
                    return []
            except KeyError:
                pass
        if not isinstance(inputs, dict):
            return [("inputs", "must be an object mapping feature names to values")]
        errors = []
        for feature in self.features:
            if feature.name not in inputs:
                errors.append((f"inputs.{feature.name}", "is missing"))
                continue
            reason = feature.value_error(inputs[feature.name])
            if reason:
                errors.append((f"inputs.{feature.name}", reason))
        if len(inputs) > len(self.features) or len(errors) > 0:
            known = set(self.names)
            errors.extend(
                (f"inputs.{name}", "is not a feature of this model version")
                for name in inputs
                if name not in known
            )
        return errors

    def text_row_to_inputs(
        self, row: dict[str, str]
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Convert one CSV row (strings) to typed inputs; missing columns are reported."""
        inputs: dict[str, Any] = {}
        errors: list[tuple[str, str]] = []
        for feature in self.features:
            if feature.name not in row:
                errors.append((f"inputs.{feature.name}", "is missing"))
                continue
            value, error = feature.from_text(row[feature.name] or "")
            if error:
                errors.append((f"inputs.{feature.name}", error))
            inputs[feature.name] = value
        return inputs, errors

    def frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """The DataFrame a model receives: one column per feature, in schema order.

        pandas is imported here, not with the module: every process loads the schema as it
        starts (the registry's models), and pandas cost 0.85 s of that start on the 2-core
        machine for the commands and workers that never build a frame
        (tests/test_start_up.py)."""
        import pandas as pd

        columns = {}
        for feature in self.features:
            values = [row.get(feature.name) for row in rows]
            if feature.type == "categorical":
                columns[feature.name] = pd.Series(values, dtype=object)
            elif feature.type == "boolean":
                columns[feature.name] = pd.Series(
                    values, dtype="boolean" if None in values else bool
                )
            elif feature.type == "integer" and None not in values:
                columns[feature.name] = pd.Series(values, dtype="int64")
            else:
                columns[feature.name] = pd.Series(values, dtype="float64")
        return pd.DataFrame(columns)


def _parse_feature(index: int, spec: Any, problems: list[str]) -> Feature | None:
    where = f"features[{index}]"
    if not isinstance(spec, dict):
        problems.append(f"{where} must be an object")
        return None
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}.name must be a non-empty string")
        return None
    where = f"feature {name!r}"
    unknown = sorted(set(spec) - FEATURE_KEYS)
    if unknown:
        problems.append(f"{where} has unknown key(s) {unknown}; allowed: {sorted(FEATURE_KEYS)}")
    kind = spec.get("type")
    if kind not in FEATURE_TYPES:
        problems.append(f"{where}.type must be one of {list(FEATURE_TYPES)}, got {kind!r}")
        return None
    minimum, maximum = spec.get("min"), spec.get("max")
    for key, bound in (("min", minimum), ("max", maximum)):
        if bound is not None and (
            kind not in ("numeric", "integer") or not _is_number(bound) or not math.isfinite(bound)
        ):
            problems.append(f"{where}.{key} must be a finite number on a numeric feature")
    if _is_number(minimum) and _is_number(maximum) and minimum > maximum:
        problems.append(f"{where}: min {minimum} is greater than max {maximum}")
    categories = spec.get("categories")
    if kind == "categorical":
        if not isinstance(categories, list) or not categories:
            problems.append(f"{where}.categories must be a non-empty list on a categorical feature")
            categories = []
        elif len(set(map(str, categories))) != len(categories):
            problems.append(f"{where}.categories has duplicates")
        elif not all(isinstance(c, str) for c in categories):
            problems.append(f"{where}.categories must be strings")
    elif categories is not None:
        problems.append(f"{where}.categories is only allowed on a categorical feature")
    groups = spec.get("groups")
    if groups is not None and (
        kind not in ("numeric", "integer")
        or not isinstance(groups, list)
        or not groups
        or not all(_is_number(edge) and math.isfinite(edge) for edge in groups)
        or groups != sorted(set(groups))
    ):
        problems.append(
            f"{where}.groups must be a non-empty, increasing list of finite numbers "
            "(bin edges) on a numeric feature"
        )
    for flag in ("nullable", "protected", "sensitive"):
        if flag in spec and not isinstance(spec[flag], bool):
            problems.append(f"{where}.{flag} must be true or false")
    unit, decimals = spec.get("unit", ""), spec.get("decimals")
    if not isinstance(unit, str) or len(unit) > 20:
        problems.append(f"{where}.unit must be a short text (at most 20 characters)")
        unit = ""
    if decimals is not None and (
        kind not in ("numeric", "integer")
        or not isinstance(decimals, int)
        or isinstance(decimals, bool)
        or not 0 <= decimals <= MAX_DECIMALS
    ):
        problems.append(
            f"{where}.decimals must be a whole number from 0 to {MAX_DECIMALS} on a numeric feature"
        )
        decimals = None
    immutable, direction, step = _parse_actionability(where, kind, spec, problems)
    return Feature(
        name=name,
        type=kind,
        label=str(spec.get("label") or name.replace("_", " ").capitalize()),
        minimum=minimum if _is_number(minimum) else None,
        maximum=maximum if _is_number(maximum) else None,
        categories=tuple(categories or ()),
        nullable=spec.get("nullable") is True,
        protected=spec.get("protected") is True,
        sensitive=spec.get("sensitive") is True,
        unit=unit.strip(),
        decimals=decimals,
        immutable=immutable,
        direction=direction,
        step=step,
    )


def _parse_actionability(
    where: str, kind: str, spec: dict[str, Any], problems: list[str]
) -> tuple[bool, str | None, float | None]:
    """immutable, direction and step, checked; absent keys leave the document untouched.

    A protected feature is immutable: it may say so, but `immutable: false` on it is
    refused (no counterfactual may ever ask a person to change a protected attribute).
    """
    protected = spec.get("protected") is True
    immutable = spec.get("immutable", protected)
    if not isinstance(immutable, bool):
        problems.append(f"{where}.immutable must be true or false")
        immutable = protected
    elif protected and not immutable:
        problems.append(
            f"{where} is protected, so it is immutable: a counterfactual never changes a "
            "protected feature; remove immutable: false"
        )
        immutable = True
    numeric = kind in ("numeric", "integer")
    direction = spec.get("direction")
    if direction is not None and (not numeric or direction not in DIRECTIONS):
        problems.append(
            f"{where}.direction must be one of {list(DIRECTIONS)} on a numeric feature, "
            f"got {direction!r} on a {kind} feature"
        )
        direction = None
    step = spec.get("step")
    if step is not None:
        if not numeric or not _is_number(step) or not math.isfinite(step) or step <= 0:
            problems.append(
                f"{where}.step must be a positive finite number on a numeric feature, got {step!r}"
            )
            step = None
        elif kind == "integer" and not float(step).is_integer():
            problems.append(f"{where}.step must be a whole number on an integer feature")
            step = None
    if direction is not None and immutable:
        problems.append(f"{where}.direction makes no sense on an immutable feature")
    return immutable, direction, float(step) if step is not None else None


def _parse_target(spec: Any, problems: list[str]) -> Target:
    if not isinstance(spec, dict):
        problems.append('target must be an object, e.g. {"type": "regression"}')
        return Target(type="regression")
    kind = spec.get("type")
    if kind not in TARGET_TYPES:
        problems.append(f"target.type must be one of {list(TARGET_TYPES)}, got {kind!r}")
        return Target(type="regression")
    if kind == "regression":
        return Target(type="regression")
    classes = spec.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        problems.append("target.classes must list at least two classes for classification")
        return Target(type="classification")
    if len(set(map(str, classes))) != len(classes):
        problems.append("target.classes has duplicates")
    if not all(isinstance(c, str | int) and not isinstance(c, bool) for c in classes):
        problems.append("target.classes must be strings or integers")
    positive = spec.get("positive_class", classes[-1])
    if positive not in classes:
        problems.append(f"target.positive_class {positive!r} is not among the classes {classes}")
    favourable = spec.get("favourable")
    if favourable is not None and (isinstance(favourable, bool) or favourable not in classes):
        problems.append(f"target.favourable {favourable!r} is not among the classes {classes}")
        favourable = None
    return Target(
        type="classification",
        classes=tuple(classes),
        positive_class=positive,
        favourable=favourable,
        wording=_parse_wording(spec.get("wording"), classes, problems),
    )


def _parse_wording(
    spec: Any, classes: list[Any], problems: list[str]
) -> tuple[tuple[str, str], ...]:
    """target.wording: {"bad": "declined", "good": "approved"}, what a person is told."""
    if spec is None:
        return ()
    names = {str(c) for c in classes}
    if (
        not isinstance(spec, dict)
        or not set(spec) <= names
        or not all(isinstance(v, str) and 0 < len(v.strip()) <= 60 for v in spec.values())
    ):
        problems.append(
            "target.wording must map classes to short texts, e.g. "
            '{"bad": "declined", "good": "approved"}'
        )
        return ()
    return tuple(sorted((str(k), v.strip()) for k, v in spec.items()))


def parse_schema(data: Any) -> Schema:
    """Parse and check a schema document; raise SchemaError listing every problem."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise SchemaError(['the schema must be an object with "features" and "target"'])
    specs = data.get("features")
    if not isinstance(specs, list) or not specs:
        raise SchemaError(["schema.features must be a non-empty list"])
    unknown = sorted(set(data) - {"features", "target", "version"})
    if unknown:
        problems.append(f"schema has unknown key(s) {unknown}")
    features = [_parse_feature(i, spec, problems) for i, spec in enumerate(specs)]
    names = [f.name for f in features if f is not None]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"duplicate feature name(s) {duplicates}")
    target = _parse_target(data.get("target"), problems)
    if problems:
        raise SchemaError(problems)
    return Schema(features=tuple(f for f in features if f), target=target, raw=data)
