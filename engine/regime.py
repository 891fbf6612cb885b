"""The shared regime model: one label per symbol (and for the market) per step, for everyone.

Why it exists: agents condition their calibration on the regime, and stages record it next to
their decisions. If each computed its own, two agents could disagree about the state of the
same symbol on the same day. The engine therefore runs one `RegimeService`: before a step's
bars are published it updates an O(1) model per symbol and writes the labels to the feature
store (set ``regime``), so every reader of (symbol, step) sees the same value. Agents read it
with ``await self.regime(symbol)`` (`engine.agent.Agent.regime`), which goes through a
`RegimeReader`: one batched ``get_many`` per agent per step, not one read per bar.

The model (per entity, on daily log returns r of its closes P):

    vol_s(t)  = sqrt(EWMA of r^2, half-life `vol_halflife`)        (RiskMetrics-style, zero mean)
    vol_l(t)  = sqrt(EWMA of r^2, half-life `vol_long_halflife`)
    ratio(t)  = vol_s / vol_l                                       (volatility level)
    trend(t)  = log(P / SMA_n(P)) / (vol_l * sqrt(n / 2))           (distance from the n-bar
                                                                     SMA in units of the noise
                                                                     such a distance has)

    trend > +band: uptrend; trend < -band: downtrend; else range
    ratio >= crisis_ratio and downtrend: CRISIS
    ratio >= volatile_ratio: VOLATILE_<trend>; else CALM_<trend>

``sqrt(n / 2)``: the gap between a random walk and its n-bar average has a standard deviation of
about ``vol * sqrt(n / 3)``; ``n / 2`` is the conventional rounder figure, so a band of 0.5 asks
for a move well inside ordinary noise. Volatility is judged relative to the entity's own
long-run level, so a utility and a chip maker both spend most of their time calm.
UNKNOWN until `min_obs` returns and a full SMA window exist. The market entity
(``MARKET_ENTITY``) is an equal-weighted index of the step's symbols: its log return is the
mean log return of the symbols that traded in the step and the step before. A move across a gap
in a symbol's data (it did not trade in the previous step) is left out of its volatilities and
of the market's return: it is not one bar's return.

Trade-offs: EWMA rather than GARCH - one parameter less to estimate walk-forward, no
optimiser in the hot path, and RiskMetrics' persistence is close to typical GARCH fits on daily
equity data. Thresholds are fixed rules rather than a fitted hidden Markov model: a label must
mean the same thing on day one of a replay as on day 8000, which an HMM refitted walk-forward
does not guarantee.

References: J.P. Morgan/Reuters (1996), "RiskMetrics - Technical Document", 4th ed. (EWMA
volatility); Ang and Bekaert (2002), "Regime switches in interest rates", and Guidolin and
Timmermann (2007), "Asset allocation under multivariate regime switching", JEDC 31(11), for
volatility x trend regimes in equity returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple

from config import RegimeConfig
from contracts import Bar, Regime
from engine.calibration import RingBuffer
from engine.features.schema import FeatureField, FeatureSet, FieldType
from engine.features.store import FeatureStore
from engine.telemetry.logging import Logger, get_logger

MARKET_ENTITY: Final = "^market"
"""The entity of the market-wide regime (an equal-weighted index of the step's symbols)."""

REGIME: Final = FeatureSet(
    name="regime",
    version=1,
    description="Shared regime model: per symbol (and ^market), per step, written before agents",
    fields=(
        FeatureField("label", FieldType.STR, description="contracts.Regime value"),
        FeatureField(
            "vol_daily", FieldType.FLOAT, allow_nan=True, description="Short EWMA daily vol"
        ),
        FeatureField(
            "vol_ratio", FieldType.FLOAT, allow_nan=True, description="Short / long EWMA vol"
        ),
        FeatureField(
            "trend_z", FieldType.FLOAT, allow_nan=True, description="log(P / SMA) in noise units"
        ),
    ),
)

_BY_VALUE: Final = {r.value: r for r in Regime}


class RegimeReading(NamedTuple):
    """One entity's regime at one step, with the quantities it was derived from (NaN while
    they are not yet defined)."""

    regime: Regime
    vol_daily: float
    vol_ratio: float
    trend_z: float

    def row(self) -> dict[str, object]:
        return {
            "label": self.regime.value,
            "vol_daily": self.vol_daily,
            "vol_ratio": self.vol_ratio,
            "trend_z": self.trend_z,
        }


class _Ewma:
    """Zero-mean EWMA of squared returns, bias-corrected by the weights (O(1))."""

    __slots__ = ("_lam", "_s", "_w")

    def __init__(self, halflife: float) -> None:
        self._lam = 0.5 ** (1.0 / halflife)
        self._s = 0.0
        self._w = 0.0

    def update(self, r2: float) -> None:
        self._s = self._lam * self._s + r2
        self._w = self._lam * self._w + 1.0

    @property
    def vol(self) -> float:
        return math.sqrt(self._s / self._w) if self._w > 0.0 else 0.0


class RegimeModel:
    """The regime of one price series, updated once per bar in O(1) (module docstring)."""

    __slots__ = ("_cfg", "_long", "_n", "_prev", "_short", "_sma", "_trend_scale")

    def __init__(self, cfg: RegimeConfig) -> None:
        self._cfg = cfg
        self._short = _Ewma(cfg.vol_halflife)
        self._long = _Ewma(cfg.vol_long_halflife)
        self._sma = RingBuffer(cfg.trend_window)
        self._prev: float | None = None
        self._n = 0
        self._trend_scale = math.sqrt(cfg.trend_window / 2.0)

    def update(self, price: float, *, after_gap: bool = False) -> RegimeReading:
        """Record this bar's close (finite, > 0) and return the regime as of this bar.
        `after_gap`: the previous close is too old for the move to count as one bar's return
        (it is left out of the volatilities)."""
        if not (price > 0.0 and math.isfinite(price)):
            raise ValueError(f"price must be finite and > 0, got {price!r}")
        prev = self._prev
        log_return = math.log(price / prev) if prev is not None and not after_gap else None
        return self.update_return(log_return, price)

    def update_return(self, log_return: float | None, level: float) -> RegimeReading:
        """Record a log return directly (an index built from returns; None: no return this
        bar) and the new `level`."""
        if log_return is not None:
            r2 = log_return * log_return
            self._short.update(r2)
            self._long.update(r2)
            self._n += 1
        self._prev = level
        self._sma.append(level)
        return self.reading(level)

    def reading(self, price: float) -> RegimeReading:
        cfg = self._cfg
        vol_s = self._short.vol
        vol_l = self._long.vol
        if self._n < cfg.min_obs or not self._sma.full or not vol_l > 0.0:
            nan = math.nan
            return RegimeReading(Regime.UNKNOWN, vol_s if self._n else nan, nan, nan)
        ratio = vol_s / vol_l
        trend = math.log(price / self._sma.mean) / (vol_l * self._trend_scale)
        return RegimeReading(classify(trend, ratio, cfg), vol_s, ratio, trend)


def classify(trend_z: float, vol_ratio: float, cfg: RegimeConfig) -> Regime:
    """The label of a (trend z, volatility ratio) pair under `cfg`'s thresholds."""
    band = cfg.trend_band
    volatile = vol_ratio >= cfg.volatile_ratio
    if trend_z > band:
        return Regime.VOLATILE_UPTREND if volatile else Regime.CALM_UPTREND
    if trend_z < -band:
        if vol_ratio >= cfg.crisis_ratio:
            return Regime.CRISIS
        return Regime.VOLATILE_DOWNTREND if volatile else Regime.CALM_DOWNTREND
    return Regime.VOLATILE_RANGE if volatile else Regime.CALM_RANGE


@dataclass
class RegimeStats:
    steps: int = 0
    bars: int = 0
    skipped_bars: int = 0
    """Bars with a non-finite or non-positive close (contract-violating input), not modelled."""


class RegimeService:
    """Labels every symbol of a step, and the market, and writes them to the feature store.

    Call `observe_step` with the step's events *before* publishing them (the replay feed and
    `engine.testing.AgentHarness` do), so an agent handling a bar of step t reads the regime
    of step t. Deterministic: the labels depend only on the closes seen so far.
    """

    def __init__(self, cfg: RegimeConfig, store: FeatureStore, log: Logger | None = None) -> None:
        self._cfg = cfg
        self._store = store
        self._log = log or get_logger("engine").bind(subsystem="regime")
        self._models: dict[str, RegimeModel] = {}
        self._market = RegimeModel(cfg)
        self._market_level = 1.0
        self._last: dict[str, tuple[float, datetime]] = {}
        """Each symbol's latest close and the step it was seen in."""
        self._last_step: datetime | None = None
        """The latest step that had bars."""
        self._warned: set[str] = set()
        self.stats = RegimeStats()
        self.latest: dict[str, RegimeReading] = {}
        """The newest reading of every entity (for tests and the run summary)."""

    async def start(self) -> None:
        await self._store.register(REGIME)

    async def observe_step(self, ts: datetime, events: Iterable[object]) -> None:
        """Update the models with the step's bars (other events are ignored) and write the
        step's labels, one `put_many` for all entities."""
        rows: dict[str, dict[str, object]] = {}
        log_returns: list[float] = []
        models = self._models
        last = self._last
        for event in events:
            if not isinstance(event, Bar):
                continue
            symbol = event.symbol
            close = event.close
            if not (close > 0.0 and math.isfinite(close)):
                self.stats.skipped_bars += 1
                if symbol not in self._warned:
                    self._warned.add(symbol)
                    self._log.warning(
                        "bar with an invalid close skipped by the regime model",
                        symbol=symbol,
                        close=repr(close),
                        ts=ts.isoformat(),
                    )
                continue
            model = models.get(symbol)
            if model is None:
                model = models[symbol] = RegimeModel(self._cfg)
            prev = last.get(symbol)
            # A move counts as one step's return only from the previous step; one across a gap
            # in the symbol's data is neither a daily return nor part of the market's.
            after_gap = prev is not None and prev[1] != self._last_step
            if prev is not None and not after_gap:
                log_returns.append(math.log(close / prev[0]))
            last[symbol] = (close, ts)
            reading = model.update(close, after_gap=after_gap)
            self.latest[symbol] = reading
            rows[symbol] = reading.row()
            self.stats.bars += 1
        if not rows:
            return  # a step without bars (a macro-only date) is no gap for anyone
        self._last_step = ts
        if log_returns:
            mean = math.fsum(log_returns) / len(log_returns)
            self._market_level *= math.exp(mean)
            market = self._market.update_return(mean, self._market_level)
            self.latest[MARKET_ENTITY] = market
            rows[MARKET_ENTITY] = market.row()
        self.stats.steps += 1
        await self._store.put_many(REGIME, rows, ts=ts)

    async def observe_batch(self, ts: datetime, batch: Sequence[tuple[str, object]]) -> None:
        """`observe_step` over a replay batch of (topic, message) pairs."""
        await self.observe_step(ts, (message for _topic, message in batch))


class RegimeReader:
    """Reads the shared regime of (entity, step), one batched read per step.

    The engine gives all its agents one reader (`engine.agent.AgentContext.regimes`), so the
    labels of a step are read from the store once, not once per agent; a reader made for one
    consumer works the same.

    The first `get` of a step reads the labels of every entity this reader has been asked about
    (plus the new one) in one `get_many` and caches them for the step. A label written for a
    later time than asked for is never returned (UNKNOWN instead): no look-ahead, whatever the
    writer does.
    """

    __slots__ = ("_cache", "_entities", "_store", "_ts")

    def __init__(self, store: FeatureStore) -> None:
        self._store = store
        self._ts: datetime | None = None
        self._cache: dict[str, Regime] = {}
        self._entities: list[str] = []

    def peek(self, entity: str, ts: datetime) -> Regime | None:
        """The label if this step's labels are already cached (no read), else None."""
        if ts != self._ts:
            return None
        return self._cache.get(entity)

    async def get(self, entity: str, ts: datetime) -> Regime:
        if ts != self._ts:
            self._ts = ts
            self._cache = {}
        else:
            cached = self._cache.get(entity)
            if cached is not None:
                return cached
        if entity not in self._entities:
            self._entities.append(entity)
        # A copy: another consumer may add an entity while this read awaits the backend.
        entities = list(self._entities)
        rows = await self._store.get_many(REGIME, entities, ("label",))
        labels: dict[str, Regime] = {}
        for name in entities:
            value = rows.get(name, {}).get("label")
            if value is None or value.ts > ts:
                labels[name] = Regime.UNKNOWN
            else:
                labels[name] = _BY_VALUE.get(str(value.value), Regime.UNKNOWN)
        if self._ts == ts:  # still the step this read was for: share it
            cache = self._cache
            for name, label in labels.items():
                if cache.get(name, Regime.UNKNOWN) is Regime.UNKNOWN:
                    cache[name] = label
        return labels[entity]


__all__ = [
    "MARKET_ENTITY",
    "REGIME",
    "RegimeModel",
    "RegimeReader",
    "RegimeReading",
    "RegimeService",
    "RegimeStats",
    "classify",
]
