"""Tests of the execution package: portfolio, paper broker, journal.

Shared builders live here (the package is ours alone), so every test module arranges the same
account: EUR account, USD instruments at EURUSD 1.08, default fee €1 per order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from contracts import Bar, Horizon, IdGenerator, Intent, PositionEffect, Side
from engine.clock import ReplayClock
from engine.execution.costs import FeeModel, FxConverter
from engine.execution.paper import PaperBroker
from engine.execution.portfolio import Portfolio
from engine.testing import make_bar

T0 = datetime(2024, 1, 2, 21, tzinfo=UTC)
DAY = timedelta(days=1)
RATE = 1.08
FX = FxConverter(account_currency="EUR", rates={"USD": RATE})


def day(n: int) -> datetime:
    return T0 + n * DAY


def bar(
    symbol: str,
    ts: datetime,
    close: float,
    *,
    open: float | None = None,
    high: float | None = None,
    low: float | None = None,
) -> Bar:
    return make_bar(symbol, ts, close, open=open, high=high, low=low)


@dataclass
class Venue:
    broker: PaperBroker
    portfolio: Portfolio
    clock: ReplayClock
    ids: IdGenerator

    def intent(
        self,
        symbol: str,
        side: Side,
        quantity: float,
        *,
        ts: datetime,
        effect: PositionEffect = PositionEffect.OPEN,
        stop: float | None = None,
        expires_in: timedelta = 3 * DAY,
        price_ref: float | None = None,
    ) -> Intent:
        ref = price_ref or self.portfolio.last_price(symbol) or 100.0
        return Intent(
            trace_id=self.ids.trace_id(),
            ts_event=ts,
            ts_init=ts,
            intent_id=self.ids.trace_id(),
            symbol=symbol,
            side=side,
            effect=effect,
            quantity=quantity,
            price_ref=ref,
            notional=quantity * ref,
            stop_price=stop,
            horizon=Horizon.W1,
            risk_budget=5.0,
            expires_at=ts + expires_in,
        )

    def step(self, ts: datetime, bars: list[Bar]) -> list[object]:
        """Steps (1) and (2) of the pipeline: fills at these bars, then marks."""
        self.clock.advance_to(ts)
        out: list[object] = list(self.broker.on_bars(bars))
        self.portfolio.mark(bars)
        return out


def venue(
    *,
    cash: float = 500.0,
    fees: FeeModel | None = None,
    slippage_bps: float = 0.0,
    seed: int = 7,
    allow_short: bool = False,
    min_fill_fraction: float = 0.5,
) -> Venue:
    portfolio = Portfolio(initial_cash=cash, fx=FX)
    clock = ReplayClock(T0 - DAY)
    ids = IdGenerator(seed)
    broker = PaperBroker(
        portfolio=portfolio,
        fees=fees if fees is not None else FeeModel(),
        fx=FX,
        slippage_bps=slippage_bps,
        ids=IdGenerator(seed + 1),
        clock=clock,
        allow_short=allow_short,
        min_fill_fraction=min_fill_fraction,
    )
    return Venue(broker=broker, portfolio=portfolio, clock=clock, ids=ids)
