"""Building the engine's most frequent messages without paying full contract validation each time.

Why this module exists: the default replay makes ~570k Signals, ~160k Opportunities (with
~570k contributions), ~170k Bars and ~80k agent Watermarks. Pydantic validation of each (id,
symbol and name patterns, Python validators of timestamps and ids, nested parts) took ~3-13 us,
several seconds of a ~90 s replay, for values that almost always have a shape the engine has
already seen validated. Each builder here makes the object directly when cheap checks *prove*
the contract holds, and otherwise validates through the model as before (the Signal builder
returns None and `Agent.signal` validates, raising `InvalidSignalError` as it always did):

- `CheckedSignals` (`Agent.signal`), `CheckedWatermarks` (an agent's step watermark, in
  `engine.supervisor`), `CheckedOpportunities` (the blender), `CheckedBars` (close-only bars
  of a replay source).

What "prove" means, field by field:
- names (`agent`, `symbol`, feature names, `origin`, `currency`, the blender name and model
  version, the quantile levels): equal to a value that already passed the model in an object
  of this builder (learned after a full validation), so the first of each still validates;
- numbers: exactly `float` (strict: no int, bool or numpy scalar takes this path), finite,
  and within the field's bounds (sigma > 0, confidence in [0, 1], var >= 0, close > 0, ...);
- enums: already members (a plugin passing "1m" gets validated and coerced);
- times: `datetime` objects whose tzinfo is `datetime.UTC`, which the model's validator would
  return unchanged;
- trace ids: 32 lowercase hex characters, not all zero (the `TraceId` pattern and validator);
- nested values taken from validated contracts (a contribution's agent, confidence and signal
  trace id come from a `Signal`), and Opportunity's own rule (quantile levels increase, values
  do not cross) re-checked.

The object is then assembled exactly as `BaseModel.model_construct` does (same `__dict__` in
field order, same fields set, no extra or private state). Tests check it equals the validated
model field by field, in JSON and in its fields set, and that invalid inputs still raise.

Trade-off and guard: the checks restate the contracts' rules, so they could drift from them.
Each model's fingerprint (a digest of its JSON Schema - every constraint pydantic can express -
and the names of its own validators) is pinned here; a contract that changes turns its builder
off, so every message validates again, and a test fails until the builder is re-checked and
the pin updated. The Python functions behind annotated types (UTC normalisation, the all-zero
id rule) are not in the fingerprint; the builders re-check what they enforce explicitly.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from pydantic import BaseModel

from contracts import Bar, BarInterval, Horizon, Regime, Signal, Watermark
from contracts.trading import Contribution, Opportunity, Quantile

_INF: Final = math.inf
_MAX: Final = sys.float_info.max
_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
_ZERO_TRACE_ID: Final = "0" * 32


def _valid_trace_id(value: object) -> bool:
    """The contracts' TraceId: 32 lowercase hex characters, not all zero (~0.1 us)."""
    return type(value) is str and value != _ZERO_TRACE_ID and _TRACE_ID.fullmatch(value) is not None


# What each builder was written against: a digest of the model's JSON Schema (every constraint
# pydantic can express: types, patterns, bounds, lengths, enums, defaults) and the names of the
# model's own validators. A contract that changes turns its builder off (every message then
# validates) until the builder is re-checked and the pin updated; a test fails meanwhile.
_PINNED: Final = {
    "Signal": ("2dc4bd4d7b94b93c", ()),
    "Watermark": ("f350d3dfdd15cc6b", ()),
    "Bar": ("e4f8308640eb5f9c", ("_check_range",)),
    "Opportunity": ("f66fc505ce628711", ("_quantiles_sorted_and_not_crossing",)),
    "Contribution": ("9a2ec572e6377401", ()),
    "Quantile": ("dce46d67e7145e63", ()),
}


def fingerprint(model: type[BaseModel]) -> tuple[str, tuple[str, ...]]:
    """(JSON Schema digest, sorted names of the model's validators), as pinned in `_PINNED`."""
    schema = json.dumps(model.model_json_schema(), sort_keys=True).encode()
    decorators = model.__pydantic_decorators__
    names = sorted(
        [
            *decorators.validators,
            *decorators.field_validators,
            *decorators.root_validators,
            *decorators.model_validators,
            *decorators.field_serializers,
            *decorators.model_serializers,
            *decorators.computed_fields,
        ]
    )
    return hashlib.sha256(schema).hexdigest()[:16], tuple(names)


def _unchanged(model: type[BaseModel]) -> bool:
    """The model is the one its builder was written for, and assembling it by hand is what
    `model_construct` does (no post-init hook, extras forbidden)."""
    return (
        model.__pydantic_post_init__ is None
        and model.model_config.get("extra") == "forbid"
        and _PINNED.get(model.__name__) == fingerprint(model)
    )


_SIGNAL_FIELDS: Final = (
    "trace_id",
    "ts_event",
    "ts_init",
    "schema_version",
    "agent",
    "symbol",
    "mu",
    "sigma",
    "horizon",
    "confidence",
    "regime",
    "features",
)
"""The Signal's fields in declaration order, the order `build` fills its `__dict__` in."""
# The fields a Signal built by `Agent.signal` reports as set: every field it passes
# (`schema_version` keeps its default).
_FIELDS_SET: Final = frozenset(_SIGNAL_FIELDS) - {"schema_version"}
_object_setattr = object.__setattr__
# Assembling the object by hand is only equivalent while the model has no post-init hook,
# forbids extras and declares exactly these fields; otherwise every Signal takes the validating
# path.
_ASSEMBLABLE: Final = _unchanged(Signal) and tuple(Signal.model_fields) == _SIGNAL_FIELDS


class CheckedSignals:
    """One agent's Signal builder: the names it has seen validated, and the cheap path."""

    __slots__ = ("_agent", "_feature_names", "_symbols")

    def __init__(self, agent: str) -> None:
        self._agent = agent
        self._symbols: set[str] = set()
        self._feature_names: set[str] = set()

    def learn(self, sig: Signal) -> None:
        """Record the names of a Signal that passed full validation."""
        if sig.agent == self._agent:
            self._symbols.add(sig.symbol)
            if sig.features:
                self._feature_names.update(sig.features)

    def build(
        self,
        trace_id: str,
        ts_event: datetime,
        ts_init: datetime,
        symbol: str,
        mu: float,
        sigma: float,
        horizon: Horizon | str,
        confidence: float,
        regime: Regime | str,
        features: dict[str, float] | None,
    ) -> Signal | None:
        """The Signal, or None when these checks cannot prove it valid (see the module).
        `features` is a dict the Signal may keep (the caller's own copy)."""
        if not (
            _ASSEMBLABLE
            and type(symbol) is str
            and symbol in self._symbols
            and type(mu) is float
            and -_INF < mu < _INF
            and type(sigma) is float
            and 0.0 < sigma < _INF
            and type(confidence) is float
            and 0.0 <= confidence <= 1.0
            and type(horizon) is Horizon
            and type(regime) is Regime
            and type(ts_event) is datetime
            and ts_event.tzinfo is UTC
            and type(ts_init) is datetime
            and ts_init.tzinfo is UTC
            and _valid_trace_id(trace_id)
        ):
            return None
        if features is not None:
            names = self._feature_names
            for name, value in features.items():
                if not (
                    type(name) is str
                    and name in names
                    and type(value) is float
                    and -_INF < value < _INF
                ):
                    return None
        fields: dict[str, Any] = {
            "trace_id": trace_id,
            "ts_event": ts_event,
            "ts_init": ts_init,
            "schema_version": 1,
            "agent": self._agent,
            "symbol": symbol,
            "mu": mu,
            "sigma": sigma,
            "horizon": horizon,
            "confidence": confidence,
            "regime": regime,
            "features": features,
        }
        return _assemble(Signal, fields, _FIELDS_SET)


class CheckedWatermarks:
    """Watermarks of one origin (an agent's name): the first is validated, and later ones are
    assembled when their times are UTC datetimes (the trace id comes from the source watermark
    being forwarded, a validated contract)."""

    __slots__ = ("_origin", "_validated")

    def __init__(self, origin: str) -> None:
        self._origin = origin
        self._validated = False

    def build(self, trace_id: str, ts_event: datetime, ts_init: datetime) -> Watermark:
        if (
            self._validated
            and _WATERMARK_ASSEMBLABLE
            and _valid_trace_id(trace_id)
            and type(ts_event) is datetime
            and ts_event.tzinfo is UTC
            and type(ts_init) is datetime
            and ts_init.tzinfo is UTC
        ):
            fields = {
                "trace_id": trace_id,
                "ts_event": ts_event,
                "ts_init": ts_init,
                "schema_version": 1,
                "origin": self._origin,
            }
            return _assemble(Watermark, fields, _WATERMARK_FIELDS_SET)
        wm = Watermark(trace_id=trace_id, ts_event=ts_event, ts_init=ts_init, origin=self._origin)
        self._validated = True  # the origin passed the model's pattern
        return wm


_WATERMARK_FIELDS_SET: Final = frozenset(("trace_id", "ts_event", "ts_init", "origin"))
_WATERMARK_ASSEMBLABLE: Final = _unchanged(Watermark) and tuple(Watermark.model_fields) == (
    "trace_id",
    "ts_event",
    "ts_init",
    "schema_version",
    "origin",
)


class CheckedOpportunities:
    """A blender's Opportunities: assembled when every field is provably valid, else None (the
    blender then validates through the model). What is proven, and how:

    - from validated Signals (the blender's inputs): the symbol, the trace ids, each
      contribution's agent and confidence, the regime;
    - checked here: the times (UTC datetimes), the horizon (an enum member), mu, sigma, var,
      cvar and every contribution's weight, mu and sigma (exactly `float`, finite, sigma > 0,
      var and cvar >= 0 or None), the quantile values (finite, not crossing - the model's own
      after-validator);
    - equal to those of an Opportunity this builder saw validated (`learn`): the blender
      name, the model version and the quantile levels.
    """

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: tuple[str, str, tuple[float, ...]] | None = None

    def learn(self, opp: Opportunity) -> None:
        """Record the names and quantile levels of an Opportunity that passed validation."""
        self._known = (opp.blender, opp.model_version, tuple(q.level for q in opp.quantiles))

    def build(
        self,
        *,
        trace_id: str,
        ts_event: datetime,
        ts_init: datetime,
        symbol: str,
        horizon: Horizon,
        mu: float,
        sigma: float,
        quantiles: Sequence[tuple[float, float]],
        contributions: Sequence[tuple[Signal, float, float, float]],
        regime: Regime,
        var: float | None,
        cvar: float | None,
        blender: str,
        model_version: str,
    ) -> Opportunity | None:
        """The Opportunity, or None when it cannot be proven valid here. `contributions` are
        (signal, weight, mu, sigma) with the signal's mu and sigma as blended; `quantiles`
        are (level, value)."""
        known = self._known
        if not (
            _OPPORTUNITY_ASSEMBLABLE
            and known is not None
            and _valid_trace_id(trace_id)
            and blender == known[0]
            and model_version == known[1]
            and type(horizon) is Horizon
            and type(regime) is Regime
            and type(mu) is float
            and -_INF < mu < _INF
            and type(sigma) is float
            and 0.0 < sigma < _INF
            and (var is None or (type(var) is float and 0.0 <= var < _INF))
            and (cvar is None or (type(cvar) is float and 0.0 <= cvar < _INF))
            and type(ts_event) is datetime
            and ts_event.tzinfo is UTC
            and type(ts_init) is datetime
            and ts_init.tzinfo is UTC
            and contributions
            and len(quantiles) == len(known[2])
        ):
            return None
        parts: list[Contribution] = []
        for sig, weight, c_mu, c_sigma in contributions:
            if not (
                type(sig) is Signal
                and type(weight) is float
                and -_INF < weight < _INF
                and type(c_mu) is float
                and -_INF < c_mu < _INF
                and type(c_sigma) is float
                and 0.0 < c_sigma < _INF
            ):
                return None
            parts.append(
                _assemble(
                    Contribution,
                    {
                        "agent": sig.agent,
                        "weight": weight,
                        "mu": c_mu,
                        "sigma": c_sigma,
                        "confidence": sig.confidence,
                        "signal_trace_id": sig.trace_id,
                    },
                    _CONTRIBUTION_FIELDS_SET,
                )
            )
        levels = known[2]
        quants: list[Quantile] = []
        previous = -_MAX  # finite: a quantile of -inf must be declined too
        for (level, value), known_level in zip(quantiles, levels, strict=True):
            if not (level == known_level and type(value) is float and previous <= value < _INF):
                return None
            previous = value
            quants.append(
                _assemble(Quantile, {"level": known_level, "value": value}, _QUANTILE_SET)
            )
        fields = {
            "trace_id": trace_id,
            "ts_event": ts_event,
            "ts_init": ts_init,
            "schema_version": 1,
            "symbol": symbol,
            "horizon": horizon,
            "mu": mu,
            "sigma": sigma,
            "quantiles": tuple(quants),
            "contributions": tuple(parts),
            "regime": regime,
            "var": var,
            "cvar": cvar,
            "blender": known[0],
            "model_version": known[1],
        }
        return _assemble(Opportunity, fields, _OPPORTUNITY_FIELDS_SET)


_CONTRIBUTION_FIELDS_SET: Final = frozenset(Contribution.model_fields)
_QUANTILE_SET: Final = frozenset(Quantile.model_fields)
_OPPORTUNITY_FIELDS_SET: Final = frozenset(Opportunity.model_fields) - {"schema_version"}
_OPPORTUNITY_ASSEMBLABLE: Final = (
    all(_unchanged(m) for m in (Opportunity, Contribution, Quantile))
    and list(Contribution.model_fields)
    == ["agent", "weight", "mu", "sigma", "confidence", "signal_trace_id"]
    and list(Quantile.model_fields) == ["level", "value"]
    and list(Opportunity.model_fields)
    == [
        "trace_id",
        "ts_event",
        "ts_init",
        "schema_version",
        "symbol",
        "horizon",
        "mu",
        "sigma",
        "quantiles",
        "contributions",
        "regime",
        "var",
        "cvar",
        "blender",
        "model_version",
    ]
)


class CheckedBars:
    """Close-only bars of a replay source: the first bar of every (symbol, currency) is
    validated; later ones are assembled when the close is a finite float > 0, the interval an
    enum member and the times UTC datetimes (the trace id comes from the source's id
    generator, which makes valid ids). The replay makes one per symbol and step."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def close_bar(
        self,
        trace_id: str,
        ts_event: datetime,
        ts_init: datetime,
        symbol: str,
        interval: BarInterval | None,
        close: float,
        currency: str,
    ) -> Bar:
        if (
            _BAR_ASSEMBLABLE
            and type(symbol) is str
            and type(currency) is str
            and (symbol, currency) in self._seen
            and type(close) is float
            and 0.0 < close < _INF
            and type(interval) is BarInterval
            and type(ts_event) is datetime
            and ts_event.tzinfo is UTC
            and type(ts_init) is datetime
            and ts_init.tzinfo is UTC
            and _valid_trace_id(trace_id)
        ):
            fields = {
                "trace_id": trace_id,
                "ts_event": ts_event,
                "ts_init": ts_init,
                "schema_version": 1,
                "symbol": symbol,
                "interval": interval,
                "open": None,
                "high": None,
                "low": None,
                "close": close,
                "volume": None,
                "currency": currency,
            }
            return _assemble(Bar, fields, _BAR_FIELDS_SET)
        bar = Bar(
            trace_id=trace_id,
            ts_event=ts_event,
            ts_init=ts_init,
            symbol=symbol,
            interval=interval,
            close=close,
            currency=currency,
        )
        self._seen.add((symbol, currency))
        return bar


_BAR_FIELDS_SET: Final = frozenset(
    ("trace_id", "ts_event", "ts_init", "symbol", "interval", "close", "currency")
)
_BAR_ASSEMBLABLE: Final = _unchanged(Bar) and tuple(Bar.model_fields) == (
    "trace_id",
    "ts_event",
    "ts_init",
    "schema_version",
    "symbol",
    "interval",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "currency",
)

M = TypeVar("M", bound=BaseModel)


# BaseModel's own slots, set through their descriptors (what `object.__setattr__` resolves to,
# without the lookup: ~2 million objects are assembled in the default replay).
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_new_object = object.__new__


def _assemble(cls: type[M], fields: dict[str, Any], fields_set: frozenset[str]) -> M:
    """The model as `BaseModel.model_construct` leaves it, without its per-field Python loop."""
    obj: M = _new_object(cls)
    _object_setattr(obj, "__dict__", fields)
    _set_fields_set(obj, set(fields_set))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


__all__ = ["CheckedBars", "CheckedOpportunities", "CheckedSignals", "CheckedWatermarks"]
