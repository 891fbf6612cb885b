"""Terse builders for stage tests: signals, opportunities and a stub portfolio."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from contracts import Contribution, Horizon, Opportunity, Regime, Signal, Watermark
from engine.execution.model import Position

T0 = datetime(2024, 1, 2, 21, tzinfo=UTC)
_trace = itertools.count(1)


def tid() -> str:
    """A fresh, valid, deterministic trace id."""
    return f"{next(_trace):032x}"


def step(i: int) -> datetime:
    return T0 + timedelta(days=i)


def make_signal(
    agent: str,
    symbol: str = "AAPL",
    *,
    mu: float = 0.001,
    sigma: float = 0.02,
    horizon: Horizon | str = Horizon.D1,
    confidence: float = 1.0,
    regime: Regime = Regime.UNKNOWN,
    ts: datetime = T0,
    trace_id: str | None = None,
) -> Signal:
    return Signal(
        trace_id=trace_id or tid(),
        ts_event=ts,
        ts_init=ts,
        agent=agent,
        symbol=symbol,
        mu=mu,
        sigma=sigma,
        horizon=Horizon(horizon),
        confidence=confidence,
        regime=regime,
    )


def make_watermark(origin: str, ts: datetime) -> Watermark:
    return Watermark(trace_id=tid(), ts_event=ts, ts_init=ts, origin=origin)


def make_opportunity(
    symbol: str = "AAPL",
    *,
    mu: float = 0.001,
    sigma: float = 0.02,
    horizon: Horizon = Horizon.D1,
    cvar: float | None = 0.05,
    ts: datetime = T0,
    trace_id: str | None = None,
) -> Opportunity:
    trace = trace_id or tid()
    return Opportunity(
        trace_id=trace,
        ts_event=ts,
        ts_init=ts,
        symbol=symbol,
        horizon=horizon,
        mu=mu,
        sigma=sigma,
        contributions=(
            Contribution(
                agent="a", weight=1.0, mu=mu, sigma=sigma, confidence=1.0, signal_trace_id=trace
            ),
        ),
        var=None,
        cvar=cvar,
        blender="precision",
        model_version="precision-v0",
    )


def make_position(
    symbol: str,
    quantity: float,
    *,
    avg_price: float = 100.0,
    opened_at: datetime = T0,
    horizon: Horizon = Horizon.D1,
    expires_at: datetime | None = None,
) -> Position:
    return Position(
        symbol=symbol,
        quantity=quantity,
        avg_price=avg_price,
        currency="USD",
        opened_at=opened_at,
        intent_id=tid(),
        stop_price=None,
        horizon=horizon,
        expires_at=expires_at or opened_at + horizon.timedelta,
    )


@dataclass
class StubPortfolio:
    """A PortfolioView with every number set by the test."""

    cash_value: float = 500.0
    equity_value: float = 500.0
    peak: float = 500.0
    prices: Mapping[str, float] = field(default_factory=dict)
    open_positions: Mapping[str, Position] = field(default_factory=dict)

    @property
    def cash(self) -> float:
        return self.cash_value

    @property
    def positions(self) -> Mapping[str, Position]:
        return self.open_positions

    def equity(self) -> float:
        return self.equity_value

    @property
    def peak_equity(self) -> float:
        return self.peak

    def last_price(self, symbol: str) -> float | None:
        return self.prices.get(symbol)
