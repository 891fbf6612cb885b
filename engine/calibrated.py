"""`CalibratedAgent`: the base of agents that turn a per-symbol indicator into calibrated signals.

Part of the public plugin API, and what every bundled agent in `plugins/` is written against.
A subclass says *what* it measures - ``indicator(bar, state)`` returns a float (or a tuple for
a multi-feature model) or None - and this class does the rest, identically for all of them:

1. **Bad input.** A bar whose close is not a finite number > 0 (possible from a custom source
   or a bridge that bypassed validation) is skipped. A gap longer than ``max_gap_days`` calendar
   days in a symbol's bars restarts that symbol's indicators and drops its pending forecasts
   (no training sample spans the gap). Every skip is counted per reason (`skips`) and logged
   once per (symbol, reason) with the count so far - never silent, never a log flood.
2. **Risk unit.** Each symbol's EW daily volatility (`SymbolState.daily_vol`, floored) gives the
   ex-ante scale ``s = vol * sqrt(h)`` of the forward return over the horizon h, so one pooled
   regression serves instruments of very different volatility.
3. **Regime.** The shared regime model's label of (symbol, step) is read from the feature store
   (`Agent.regime`) and mapped to a calibration group (``regime_grouping``, default by
   volatility: calm / volatile / crisis); the calibrator keeps a partially pooled model per
   group (`engine.calibration`, "Regimes").
4. **Calibration.** `engine.calibration.ForwardReturnCalibrator` maps x to (mu, sigma) walk-
   forward: nothing until ``min_samples`` realized samples exist, sigma from out-of-sample
   errors, confidence from the effective sample size and the slopes' significance.
5. **Emission.** A signal only with an Estimate (the calibrator guarantees a finite mu and a
   finite sigma > 0, and `Agent.signal` validates the contract) and - unless
   ``emit_zero_confidence`` - a positive confidence: a zero-confidence signal gets no weight in
   any blend.
6. **Publication.** The indicator goes to the agent's feature set (``feature_set``) in the store,
   per symbol and bar, for other agents, stages and dashboards (``published`` chooses values).
   The rows of a step are written together, in one ``put_many`` when the step ends
   (`Agent.on_step_end`), so they are in the store before the engine closes the step.

Everything per bar is O(1) in the history length: ring buffers and EW recursions.

Trade-offs: one indicator model per agent (a subclass wanting two horizons is two agents), and
the regime is read per step rather than pushed in the bar, so the bar contract stays a market
fact and the label has one owner (the engine's `RegimeService`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from contracts import Bar, Horizon, Regime
from engine.agent import Agent
from engine.calibration import (
    Estimate,
    EwMoments,
    ForwardReturnCalibrator,
    RingBuffer,
    regime_group,
)
from engine.features import FeatureSet


class CalibratedAgentParams(BaseModel):
    """Parameters every calibrated agent shares: volatility scaling, regime conditioning, the
    walk-forward calibrator, bad-input handling and whether zero-confidence signals are emitted.

    Plugin params models subclass it, add their own fields and may override defaults (redeclare
    the field); `calibrator(...)` builds the calibrator from them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    vol_halflife: float = Field(default=42.0, gt=0, description="EW volatility half-life, bars")
    min_vol_obs: int = Field(default=20, ge=2, description="Returns seen before vol is trusted")
    vol_floor: float = Field(
        default=0.003, gt=0, description="Floor of the daily vol: stale quotes must not shrink it"
    )
    pooled: bool = Field(default=True, description="One model for all symbols, or one each")
    halflife_bars: float = Field(default=756.0, gt=0, description="Calibration memory, bars")
    error_halflife_bars: float = Field(default=126.0, gt=0, description="Memory of sigma, bars")
    min_samples: int = Field(default=1000, ge=1, description="Realized samples before emitting")
    shrinkage: float = Field(default=10.0, ge=0, description="Ridge prior, effective samples")
    cross_correlation: float = Field(
        default=0.3, ge=0, le=1, description="Assumed avg. correlation across pooled symbols"
    )
    refit_every: int = Field(
        default=20, ge=1, description="Samples between regression solves (20: about once a bar)"
    )
    regime_grouping: Literal["none", "volatility", "trend", "full"] = Field(
        default="volatility",
        description="Regime groups with their own (partially pooled) model",
    )
    regime_prior: float = Field(
        default=50.0, gt=0, description="Pseudo-samples of the pooled model in a regime's mu"
    )
    min_regime_errors: int = Field(
        default=100, ge=1, description="Errors scored in a regime before it has its own sigma"
    )
    max_gap_days: float = Field(
        default=10.0, gt=0, description="A longer gap in a symbol's bars restarts its indicators"
    )
    emit_zero_confidence: bool = Field(
        default=False,
        description="Also emit signals whose calibrated confidence is 0 (they get no weight)",
    )

    def calibrator(self, horizon_bars: int, *, n_features: int = 1) -> ForwardReturnCalibrator:
        return ForwardReturnCalibrator(
            horizon_bars,
            n_features=n_features,
            halflife_bars=self.halflife_bars,
            error_halflife_bars=self.error_halflife_bars,
            min_samples=self.min_samples,
            shrinkage=self.shrinkage,
            pooled=self.pooled,
            cross_correlation=self.cross_correlation,
            refit_every=self.refit_every,
            regime_prior=self.regime_prior,
            min_regime_errors=self.min_regime_errors,
        )


class SymbolState:
    """One symbol's recent closes and EW volatility, as calibrated agents track them.

    `closes` holds the last `history` closes (what the indicator needs, e.g. lookback + 1);
    `extra` is the subclass's own per-symbol state (see `CalibratedAgent.new_extra`).
    """

    __slots__ = ("_floor", "_last_close", "_min_obs", "bars", "closes", "extra", "last_ts", "vol")

    def __init__(self, params: CalibratedAgentParams, history: int = 1, extra: Any = None) -> None:
        self.closes = RingBuffer(max(history, 1))
        self.vol = EwMoments(params.vol_halflife)
        self._floor = params.vol_floor
        self._min_obs = params.min_vol_obs
        self.bars = 0
        self._last_close = 0.0
        self.last_ts: datetime | None = None
        self.extra = extra

    def update(self, close: float, ts: datetime) -> None:
        """Record this bar's close (call once per bar, before reading anything)."""
        if self.bars:
            self.vol.update(close / self._last_close - 1.0)
        self.closes.append(close)
        self._last_close = close
        self.bars += 1
        self.last_ts = ts

    @property
    def last_return(self) -> float | None:
        """The latest daily simple return, None before two closes."""
        closes = self.closes
        if len(closes) < 2:
            return None
        return closes.ago(0) / closes.ago(1) - 1.0

    def daily_vol(self) -> float | None:
        """EW daily volatility, floored; None until `min_vol_obs` returns were seen."""
        vol = self.vol
        if vol.count < self._min_obs:
            return None
        std = vol.std
        floor = self._floor
        return floor if floor > std else std  # max(std, floor), NaN included


def _finite(x: float | tuple[float, ...]) -> bool:
    if isinstance(x, tuple):
        return all(-math.inf < v < math.inf for v in x)
    return -math.inf < x < math.inf


CP = TypeVar("CP", bound=CalibratedAgentParams)

Indicator = float | tuple[float, ...] | None


class CalibratedAgent(Agent[CP]):
    """Base class of calibrated indicator agents (see the module docstring).

    Subclass as ``class MyAgent(CalibratedAgent[MyParams])`` with ``MyParams`` a subclass of
    `CalibratedAgentParams`; set `horizon` (and `feature_set`, `n_features` when needed);
    implement `indicator`. Override `history_bars` when the indicator needs past closes,
    `new_extra` and `observe` for other per-symbol state, `begin_step` for a cross-sectional
    score, `published` / `signal_features` to change what is written to the store or attached
    to the signal.
    """

    horizon: ClassVar[Horizon]
    feature_set: ClassVar[FeatureSet | None] = None
    n_features: ClassVar[int] = 1

    # -- what a subclass provides --------------------------------------------------------------

    def history_bars(self) -> int:
        """Closes per symbol the indicator reads through ``state.closes`` (1 = the latest)."""
        return 1

    def new_extra(self, symbol: str) -> Any:
        """The subclass's own per-symbol state (``state.extra``), made on a symbol's first bar
        and again after a gap restarted it."""
        return None

    async def begin_step(self, ts: datetime) -> None:
        """Called once per timestamp, before its first bar is recorded: every symbol's state
        still ends at the previous step, so a cross-sectional score computed here is the same
        whatever order the step's bars arrive in and uses no close of the step."""

    def observe(self, bar: Bar, state: SymbolState) -> None:
        """Called for every recorded bar, before `indicator` and whether or not the volatility
        is ready yet: advance the subclass's own per-bar state (``state.extra``) here."""

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> Indicator:
        """The indicator at this bar (already recorded in `state`), from data known now; None
        while it is not computable. `vol` is the symbol's floored EW daily volatility."""
        raise NotImplementedError

    def published(self, x: float | tuple[float, ...], vol: float) -> Mapping[str, float] | None:
        """Values written to `feature_set` for this symbol and bar (default: score, vol_daily)."""
        if isinstance(x, tuple):
            return None
        return {"score": x, "vol_daily": vol}

    def signal_features(
        self, x: float | tuple[float, ...], vol: float, est: Estimate
    ) -> dict[str, float]:
        """The numbers attached to a signal (``Signal.features``) for the audit trail."""
        out: dict[str, float] = {"vol_daily": vol, "n_eff": est.n_eff}
        if isinstance(x, tuple):
            for i, v in enumerate(x):
                out[f"x{i}"] = v
        else:
            out["score"] = x
            out["beta"] = est.betas[0]
        out["regime_weight"] = est.regime_weight
        return out

    # -- machinery -----------------------------------------------------------------------------

    async def on_start(self) -> None:
        p = self.params
        self.states: dict[str, SymbolState] = {}
        """Per-symbol state, readable by subclasses (e.g. a cross-sectional rank)."""
        self.skips: dict[str, int] = {}
        """Bars skipped, by reason."""
        self._skip_logged: set[tuple[str, str]] = set()
        self._bars_h = int(self.horizon.trading_days)
        self._h_sqrt = math.sqrt(self.horizon.trading_days)
        self._max_gap = timedelta(days=p.max_gap_days)
        self._emit_zero_confidence = p.emit_zero_confidence
        self.calibrator = p.calibrator(self._bars_h, n_features=self.n_features)
        self._groups = {r: regime_group(r, p.regime_grouping) for r in Regime}
        self._shared_regimes = self._regime_reader()
        self._step_ts: datetime | None = None
        cls = type(self)
        self._begins_steps = cls.begin_step is not CalibratedAgent.begin_step
        self._observes = cls.observe is not CalibratedAgent.observe
        self._rows: dict[str, Mapping[str, float]] = {}
        self._rows_ts: datetime | None = None
        if self.feature_set is not None:
            await self.features.register(self.feature_set)
        await self.setup()

    async def on_step_end(self, ts: datetime) -> None:
        """Publish the step's indicators in one `put_many` (subclasses overriding this must
        await ``super().on_step_end(ts)``)."""
        await self._publish_rows()

    async def on_stop(self) -> None:
        await self._publish_rows()

    async def _publish_rows(self) -> None:
        rows = self._rows
        if rows and self.feature_set is not None and self._rows_ts is not None:
            self._rows = {}
            await self.features.put_many(self.feature_set, rows, ts=self._rows_ts)

    async def setup(self) -> None:
        """Extra start-up work of a subclass (called at the end of `on_start`)."""

    def skip(self, symbol: str, reason: str, **context: object) -> None:
        """Count a skipped input and log it once per (symbol, reason)."""
        count = self.skips[reason] = self.skips.get(reason, 0) + 1
        if (symbol, reason) not in self._skip_logged:
            self._skip_logged.add((symbol, reason))
            self.log.warning(
                "input skipped", symbol=symbol, reason=reason, skipped_so_far=count, **context
            )

    def state_of(self, bar: Bar) -> SymbolState | None:
        """The symbol's state after recording `bar`, or None when the bar was skipped."""
        symbol = bar.symbol
        close = bar.close
        if not (close > 0.0 and math.isfinite(close)):
            self.skip(symbol, "close is not a finite number > 0", close=repr(close))
            return None
        state = self.states.get(symbol)
        ts = bar.ts_event
        if state is not None and state.last_ts is not None:
            if ts <= state.last_ts:
                self.skip(symbol, "bar not newer than the previous one", ts=ts.isoformat())
                return None
            if ts - state.last_ts > self._max_gap:
                self.skip(
                    symbol,
                    "gap in the data: indicators restarted",
                    gap_days=(ts - state.last_ts).days,
                    ts=ts.isoformat(),
                )
                state = None
                self.calibrator.reset(symbol)
        if state is None:
            state = self.states[symbol] = SymbolState(
                self.params, self.history_bars(), self.new_extra(symbol)
            )
        state.update(close, ts)
        return state

    async def on_bar(self, bar: Bar) -> None:
        ts = bar.ts_event
        if self._step_ts is None or ts > self._step_ts:
            self._step_ts = ts
            if self._begins_steps:
                await self.begin_step(ts)
        state = self.state_of(bar)
        if state is None:
            return
        if self._observes:
            self.observe(bar, state)
        await self.calibrate(bar, state)

    async def calibrate(self, bar: Bar, state: SymbolState) -> Estimate | None:
        """Steps 2-6 of the module docstring for a recorded bar; returns the Estimate if a
        signal was emitted."""
        symbol = bar.symbol
        close = bar.close
        vol = state.daily_vol()
        if vol is None:
            self.calibrator.update(symbol, None, close)
            return None
        x = self.indicator(bar, state, vol)
        if x is not None and not _finite(x):
            self.skip(symbol, "indicator not finite", x=repr(x))
            x = None
        regime = Regime.UNKNOWN
        group: str | None = None
        if x is not None:
            if self.feature_set is not None:
                values = self.published(x, vol)
                if values is not None:
                    if bar.ts_event != self._rows_ts:
                        await self._publish_rows()
                        self._rows_ts = bar.ts_event
                    self._rows[symbol] = values
            cached = self._shared_regimes.peek(symbol, bar.ts_event)  # no await when cached
            regime = cached if cached is not None else await self.regime(symbol)
            group = self._groups[regime]
        est = self.calibrator.update(symbol, x, close, scale=vol * self._h_sqrt, regime=group)
        if est is None or x is None:
            return None
        if est.confidence <= 0.0 and not self._emit_zero_confidence:
            # |t| <= 1: the calibration finds no usable relation; a zero-confidence signal
            # would get zero weight in any blend, so saying nothing is equivalent and cheaper.
            return None
        self.signal(
            symbol,
            mu=est.mu,
            sigma=est.sigma,
            horizon=self.horizon,
            confidence=est.confidence,
            regime=regime,
            features=self.signal_features(x, vol, est),
        )
        return est


__all__ = [
    "CalibratedAgent",
    "CalibratedAgentParams",
    "Indicator",
    "SymbolState",
]
