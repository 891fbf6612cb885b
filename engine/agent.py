"""The plugin API: subclass `Agent` to write an agent.

An agent is a plugin coroutine hosted by the engine's event loop. It sees exactly four things of
the engine: `self.clock`, `self.log`, `self.params` (its own validated, typed parameters) and
`self.signal(...)` to emit a forecast, plus the shared feature store (`self.features`) and the
shared regime model's labels (`await self.regime(symbol)`). It never
sees the bus, watermarks, other agents or the wall clock; the supervisor (`engine.supervisor`)
feeds it events, publishes what it emits, and keeps it alive.

Design choices:
- Parameters are a pydantic model given as the generic argument (`Agent[MyParams]`), so a typo in
  engine.toml fails at start-up with the key path, and the agent body is fully typed.
- `signal()` validates immediately and queues the Signal in an outbox; the supervisor publishes
  the outbox after the hook returns. Plugin code therefore never awaits the bus (no backpressure
  surprises inside a hook), and a hook that raises half-way publishes nothing half-done.
- A Signal inherits the trace id of the event being handled, so one trace follows a bar through
  the signal to the order it caused.
- Subscriptions default to the kinds of events whose hooks the subclass overrides.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from contracts import (
    Bar,
    Contract,
    Horizon,
    IdGenerator,
    MacroObservation,
    Regime,
    Signal,
    SocialPost,
    topics,
)
from engine.checked_contracts import CheckedSignals
from engine.clock import Clock
from engine.features.store import FeatureStore
from engine.regime import MARKET_ENTITY, RegimeReader
from engine.telemetry.logging import Logger


class NoParams(BaseModel):
    """Parameters of an agent that takes none."""

    model_config = ConfigDict(frozen=True, extra="forbid")


P = TypeVar("P", bound=BaseModel)


class InvalidSignalError(ValueError):
    """A hook asked for a Signal that fails its contract; names the agent, symbol and field."""


@dataclass(frozen=True, slots=True)
class AgentContext:
    """What the engine hands an agent at construction. Built by the composition root."""

    clock: Clock
    log: Logger
    ids: IdGenerator
    features: FeatureStore | None = None
    """The engine's shared feature store (None only for agents built outside an engine)."""
    regimes: RegimeReader | None = None
    """The engine's reader of the shared regime labels (one for all agents; None: each agent
    reads through its own)."""


class Agent(Generic[P]):
    """Base class of every agent plugin.

    Subclass as ``class MyAgent(Agent[MyParams])`` (or ``Agent[NoParams]``) and override the
    hooks you need. Constructors must not do I/O; do set-up in :meth:`on_start`.
    """

    params_model: ClassVar[type[BaseModel]] = NoParams

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Agent):
                (arg,) = typing.get_args(base) or (None,)
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    cls.params_model = arg
                elif arg is not None and not isinstance(arg, TypeVar):
                    raise TypeError(
                        f"{cls.__qualname__}: Agent[...] takes a pydantic model, got {arg!r}"
                    )

    def __init__(self, name: str, params: P, context: AgentContext) -> None:
        self._name = name
        self._params = params
        self._context = context
        self._log = context.log.bind(agent=name)
        self._outbox: list[Signal] = []
        self._current: Contract | None = None
        self._regimes: RegimeReader | None = context.regimes
        self._checked = CheckedSignals(name)

    # -- what the agent sees -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def params(self) -> P:
        return self._params

    @property
    def clock(self) -> Clock:
        return self._context.clock

    @property
    def log(self) -> Logger:
        return self._log

    @property
    def features(self) -> FeatureStore:
        """The feature store every agent and stage shares: ``await self.features.put(SET,
        symbol, {...}, ts=bar.ts_event)`` to publish an indicator, ``get``/``get_many`` to read.
        Writes are write-behind (they return before the backend has them); see
        `engine.features.store`."""
        store = self._context.features
        if store is None:
            raise RuntimeError(
                f"agent {self._name}: no feature store in this context (build the agent with "
                "engine.testing.AgentHarness or inside an Engine)"
            )
        return store

    async def regime(self, symbol: str = MARKET_ENTITY) -> Regime:
        """The shared regime model's label of `symbol` (default: the market) at the event being
        handled: the same value every agent and stage reads for that (symbol, step), written to
        the feature store by the engine before the step's bars are published (see
        `engine.regime`). ``Regime.UNKNOWN`` while the model is warming up or has no data."""
        reader = self._regime_reader()
        current = self._current
        ts = current.ts_event if current is not None else self._context.clock.now()
        cached = reader.peek(symbol, ts)
        if cached is not None:
            return cached
        return await reader.get(symbol, ts)

    def _regime_reader(self) -> RegimeReader:
        """The engine's shared reader, or this agent's own when built without one."""
        reader = self._regimes
        if reader is None:
            reader = self._regimes = RegimeReader(self.features)
        return reader

    def subscriptions(self) -> Sequence[str]:
        """Topic patterns this agent consumes; by default, those its overridden hooks handle."""
        cls = type(self)
        patterns: list[str] = []
        if cls.on_bar is not Agent.on_bar:
            patterns.append(topics.ALL_BARS)
        if cls.on_macro is not Agent.on_macro:
            patterns.append(topics.ALL_MACRO)
        if cls.on_post is not Agent.on_post:
            patterns.append(topics.ALL_POSTS)
        return patterns

    def signal(
        self,
        symbol: str,
        *,
        mu: float,
        sigma: float,
        horizon: Horizon | str,
        confidence: float,
        regime: Regime | str = Regime.UNKNOWN,
        features: Mapping[str, float] | None = None,
    ) -> Signal:
        """Build, validate and queue a Signal; it is published when the current hook returns.

        mu and sigma are simple returns over `horizon`. Raises :class:`InvalidSignalError`
        (never clamps) when a value breaks the contract, e.g. NaN or sigma <= 0.
        """
        current = self._current
        now = self._context.clock.now()
        trace_id = current.trace_id if current is not None else self._context.ids.trace_id()
        ts_event = current.ts_event if current is not None else now
        try:
            # One copy, made once: the caller's mapping (or one-shot iterable) is read once.
            copied = dict(features) if features is not None else None
            sig = self._checked.build(
                trace_id, ts_event, now, symbol, mu, sigma, horizon, confidence, regime, copied
            )
            if sig is None:  # not provably valid by the cheap checks: the contract decides
                sig = Signal(
                    trace_id=trace_id,
                    ts_event=ts_event,
                    ts_init=now,
                    agent=self._name,
                    symbol=symbol,
                    mu=mu,
                    sigma=sigma,
                    horizon=horizon,
                    confidence=confidence,
                    regime=regime,
                    features=copied,
                )
                self._checked.learn(sig)
        except (ValidationError, ValueError) as exc:
            raise InvalidSignalError(
                f"agent {self._name!r} emitted an invalid signal for {symbol!r}: {exc}"
            ) from exc
        self._outbox.append(sig)
        return sig

    # -- hooks ---------------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Called once before the first event. Do set-up (warm-up reads, etc.) here."""

    async def on_bar(self, bar: Bar) -> None:
        """Called for every bar on the agent's subscriptions, in publish order."""

    async def on_macro(self, observation: MacroObservation) -> None:
        """Called for every macro observation (e.g. a Treasury yield) subscribed to."""

    async def on_post(self, post: SocialPost) -> None:
        """Called for every social post subscribed to."""

    async def on_step_end(self, ts: datetime) -> None:
        """Called once every event up to `ts` has been handled (the step's watermark), before
        the engine learns that this agent is done with the step. For work per step rather than
        per event: publish a step's batched features, rank a cross-section. Signals emitted
        here carry the step's time and belong to the step. Only called when overridden."""

    async def on_stop(self) -> None:
        """Called once at shutdown (or quarantine). Release resources here."""

    # -- used by the supervisor only -----------------------------------------------------------

    def _take_outbox(self) -> list[Signal]:
        out, self._outbox = self._outbox, []
        return out

    def _set_current(self, event: Contract | None) -> None:
        self._current = event


def params_model_of(agent_cls: type[Agent[Any]]) -> type[BaseModel]:
    """The pydantic model an agent class declared for its parameters."""
    return agent_cls.params_model


__all__ = [
    "Agent",
    "AgentContext",
    "InvalidSignalError",
    "NoParams",
    "params_model_of",
]
