"""Feature sets: named, versioned, typed groups of features, and the values they hold.

Why this module exists: agents and stages share features through one store, so what a feature
*is* (its type, whether NaN is allowed, how large it may be, how long it lives) must be declared
once, checked on every write, and travel with its key, so that a writer of v2 and a reader of v1
can coexist and a wrong type is an error at the writer, not a surprise at a reader.

Trade-offs made:
- Four field types cover the engine's features: float, int, str and 1-D float arrays (histories).
  Arrays are float64 only: the one dtype every consumer (numpy maths) wants, and one the codec
  can hand back zero-copy.
- Validation happens on `put`, in the caller's task, so a bad value is reported with the feature
  set, entity and field that produced it; reads trust what writes validated, except that bytes
  coming back from Redis are decoded defensively (see the codec).
- A value carries the event time it was computed for (`ts`), never the wall clock: staleness is
  "how far behind the step is this", which is what a replay and a live run both mean by it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Value = float | int | str | FloatArray

NAME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ENTITY_PATTERN: Final = re.compile(r"^[A-Za-z0-9^][A-Za-z0-9_./:^=-]{0,127}$")
MAX_STR_BYTES: Final = 4096
MAX_ARRAY_LEN: Final = 1_000_000


class FeatureError(Exception):
    """A feature was used in a way its declaration does not allow (unknown, wrong type, ...)."""


class FieldType(StrEnum):
    FLOAT = "float"
    INT = "int"
    STR = "str"
    FLOAT_ARRAY = "float_array"


@dataclass(frozen=True, slots=True)
class FeatureField:
    """One feature of a set."""

    name: str
    type: FieldType
    allow_nan: bool = False
    """Floats and array elements: NaN allowed (a gap) or rejected. Infinity is always rejected."""
    max_len: int | None = None
    """Strings: bytes (UTF-8); arrays: elements. None = the global limits."""
    description: str = ""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise FeatureError(f"feature name {self.name!r} must match {NAME_PATTERN.pattern}")


class FeatureValue(NamedTuple):
    """A stored feature: its value, the event time it was computed for, and whether it came from
    a cache that could not be confirmed fresh (the store was unreachable).

    A named tuple rather than a frozen dataclass: reads build one per feature per entity, and
    constructing a tuple is several times cheaper. Immutable all the same; the degraded
    variant of a value is ``value._replace(stale=True)``."""

    value: Value
    ts: datetime
    stale: bool = False


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """A named, versioned group of features with a default TTL (None = no expiry)."""

    name: str
    version: int
    fields: tuple[FeatureField, ...]
    default_ttl_s: float | None = None
    description: str = ""
    _by_name: dict[str, FeatureField] = field(init=False, repr=False, compare=False)
    fast_fields: dict[str, int] | None = field(init=False, repr=False, compare=False)
    """For sets of only FLOAT and STR fields: name -> -1 for a float, or the longest string (in
    characters) that certainly fits the field's byte limit; writes of finite floats and such
    strings take the store's fast path. None for sets with other field types."""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise FeatureError(f"feature set name {self.name!r} must match {NAME_PATTERN.pattern}")
        if not (isinstance(self.version, int) and self.version >= 1):
            raise FeatureError(f"feature set {self.name}: version must be an int >= 1")
        if self.default_ttl_s is not None and not self.default_ttl_s > 0:
            raise FeatureError(f"feature set {self.name}: default_ttl_s must be > 0 or None")
        by_name: dict[str, FeatureField] = {}
        for f in self.fields:
            if f.name in by_name:
                raise FeatureError(f"feature set {self.name}: duplicate field {f.name!r}")
            by_name[f.name] = f
        if not by_name:
            raise FeatureError(f"feature set {self.name}: declares no fields")
        object.__setattr__(self, "_by_name", by_name)
        fast: dict[str, int] = {}
        for f in self.fields:
            if f.type is FieldType.FLOAT:
                fast[f.name] = -1
            elif f.type is FieldType.STR:
                fast[f.name] = (f.max_len or MAX_STR_BYTES) // 4  # UTF-8: <= 4 bytes a char
        scalar_only = len(fast) == len(self.fields)
        object.__setattr__(self, "fast_fields", fast if scalar_only else None)

    @property
    def ref(self) -> str:
        """``name:vN``, as shown by the CLI and in errors."""
        return f"{self.name}:v{self.version}"

    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def field(self, name: str, entity: str | None = None) -> FeatureField:
        found = self._by_name.get(name)
        if found is None:
            where = f" (entity {entity!r})" if entity is not None else ""
            raise FeatureError(
                f"feature set {self.ref}{where}: unknown feature {name!r}; "
                f"declared: {', '.join(self._by_name)}"
            )
        return found

    def resolve(self, names: Sequence[str] | None, entity: str | None = None) -> tuple[str, ...]:
        """The requested names checked against the declaration (None = every field)."""
        if names is None:
            return self.names()
        for name in names:
            self.field(name, entity)
        return tuple(names)

    def validate(self, entity: str, values: Mapping[str, Any]) -> dict[str, Value]:
        """Check and normalise one entity's values for a write; FeatureError names the set,
        entity and field of the first problem found."""
        check_entity(self, entity)
        if not values:
            raise FeatureError(f"feature set {self.ref} (entity {entity!r}): no values to write")
        out: dict[str, Value] = {}
        by_name = self._by_name
        for name, value in values.items():
            spec = by_name.get(name)
            if spec is None:
                spec = self.field(name, entity)  # raises, naming the set, entity and field
            if type(value) is float and spec.type is FieldType.FLOAT and math.isfinite(value):
                out[name] = value  # the per-event common case
            else:
                out[name] = _validate_value(self, entity, spec, value)
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-able declaration (stored beside the data so the CLI can show it)."""
        return {
            "name": self.name,
            "version": self.version,
            "default_ttl_s": self.default_ttl_s,
            "description": self.description,
            "fields": [
                {
                    "name": f.name,
                    "type": f.type.value,
                    "allow_nan": f.allow_nan,
                    "max_len": f.max_len,
                    "description": f.description,
                }
                for f in self.fields
            ],
        }


@functools.lru_cache(maxsize=65_536)
def _entity_ok(entity: str) -> bool:
    # Entities repeat (symbols), so the regex runs once per distinct one.
    return ENTITY_PATTERN.match(entity) is not None


def check_entity(fs: FeatureSet, entity: str) -> None:
    if not isinstance(entity, str) or not _entity_ok(entity):
        raise FeatureError(
            f"feature set {fs.ref}: entity {entity!r} must match {ENTITY_PATTERN.pattern}"
        )


def _problem(fs: FeatureSet, entity: str, spec: FeatureField, message: str) -> FeatureError:
    return FeatureError(f"feature set {fs.ref} (entity {entity!r}), field {spec.name!r}: {message}")


def _validate_value(fs: FeatureSet, entity: str, spec: FeatureField, value: Any) -> Value:
    kind = spec.type
    if kind is FieldType.FLOAT and type(value) is float and math.isfinite(value):
        return value  # the per-event common case, before the general checks
    if kind is FieldType.FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise _problem(fs, entity, spec, f"expected a float, got {type(value).__name__}")
        number = float(value)
        if math.isinf(number) or (math.isnan(number) and not spec.allow_nan):
            raise _problem(fs, entity, spec, f"{number} is not allowed")
        return number
    if kind is FieldType.INT:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise _problem(fs, entity, spec, f"expected an int, got {type(value).__name__}")
        integer = int(value)
        if not -(2**63) <= integer < 2**63:
            raise _problem(fs, entity, spec, "does not fit in 64 bits")
        return integer
    if kind is FieldType.STR:
        if not isinstance(value, str):
            raise _problem(fs, entity, spec, f"expected a str, got {type(value).__name__}")
        size = len(value.encode("utf-8"))
        limit = spec.max_len or MAX_STR_BYTES
        if size > limit:
            raise _problem(fs, entity, spec, f"{size} bytes exceeds the limit of {limit}")
        return value
    if not isinstance(value, np.ndarray | list | tuple):
        raise _problem(fs, entity, spec, f"expected a float array, got {type(value).__name__}")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _problem(fs, entity, spec, f"not convertible to float64: {exc}") from None
    if array.ndim != 1:
        raise _problem(fs, entity, spec, f"expected a 1-D array, got shape {array.shape}")
    limit = spec.max_len or MAX_ARRAY_LEN
    if array.size > limit:
        raise _problem(fs, entity, spec, f"{array.size} elements exceeds the limit of {limit}")
    if np.isfinite(array).all():  # the common case, one pass
        return array
    if np.isinf(array).any():
        raise _problem(fs, entity, spec, "contains infinity")
    if not spec.allow_nan:
        raise _problem(fs, entity, spec, "contains NaN, which this feature forbids")
    return array


__all__ = [
    "FeatureError",
    "FeatureField",
    "FeatureSet",
    "FeatureValue",
    "FieldType",
    "FloatArray",
    "Value",
    "check_entity",
]
