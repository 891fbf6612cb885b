"""The account's books: cash, signed positions, marks, realised PnL and fees.

Why this module exists: the paper venue applies fills here, and the decision stages read it
through the read-only `PortfolioView` protocol. Nothing else mutates the books.

Accounting (all money in the account currency, prices in the instrument currency):

- A fill moves cash by ``-signed_quantity * price`` (converted) minus its fee. Cash is the only
  place a trade's money lands, so ``equity = cash + positions_value`` holds by construction.
- A position keeps its average entry price. Increasing it re-averages; reducing it realises
  ``(price - avg_price) * closed_quantity`` (sign-adjusted for shorts), converted; the average
  price of what remains is unchanged.
- A fill larger than an opposite position *flips* it: the old position is closed (realising its
  PnL) and the remainder opens a new one at the fill price. Opening needs a `PositionMeta`
  (the intent that opened it, its horizon and stop), so a flip without one is refused with a
  `ValueError` before anything changes.
- Hence the bookkeeping identity ``initial + realised + unrealised - fees == equity`` (exact
  with a constant FX rate, up to floating-point rounding), which the tests check as a property.
- A position is valued at its symbol's last mark (`mark`), or at its average price before the
  symbol's first mark (fills never mark: a fill price carries slippage, not the market's price).
- Peak equity is the highest equity seen at any snapshot (and now); drawdown is
  ``1 - equity / peak`` clipped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType

from contracts import Bar, Fill, Horizon, Side
from engine.execution.costs import FxConverter
from engine.execution.model import PortfolioSnapshot, Position

_DUST = 1e-12
"""A fill within this relative distance of a position's size closes it exactly (float dust)."""


@dataclass(frozen=True, slots=True)
class PositionMeta:
    """What a fill that opens a position must say about it (the venue takes it from the intent)."""

    intent_id: str
    horizon: Horizon
    stop_price: float | None = None
    expires_at: datetime | None = None
    """When the horizon elapses; default: the opening fill's `ts_event` + `horizon`."""


@dataclass(frozen=True, slots=True)
class FillEffect:
    """What one fill did to the books (account currency)."""

    realized_pnl: float
    cash_delta: float
    fee: float
    position: Position | None
    """The symbol's position after the fill (None when flat)."""


class Portfolio:
    """Cash and positions of one account. Implements `PortfolioView`."""

    __slots__ = (
        "_cash",
        "_currency_of",
        "_fees_paid",
        "_fx",
        "_initial_cash",
        "_last",
        "_peak",
        "_positions",
        "_realized",
    )

    def __init__(self, *, initial_cash: float, fx: FxConverter) -> None:
        if not math.isfinite(initial_cash) or initial_cash <= 0:
            raise ValueError(f"initial_cash must be a positive finite amount (got {initial_cash})")
        self._initial_cash = float(initial_cash)
        self._cash = float(initial_cash)
        self._fx = fx
        self._positions: dict[str, Position] = {}
        self._last: dict[str, float] = {}
        self._currency_of: dict[str, str] = {}
        self._realized = 0.0
        self._fees_paid = 0.0
        self._peak = float(initial_cash)

    # ------------------------------------------------------------------------- read-only view

    @property
    def account_currency(self) -> str:
        return self._fx.account_currency

    @property
    def initial_cash(self) -> float:
        return self._initial_cash

    @property
    def cash(self) -> float:
        return self._cash

    @property
    def positions(self) -> Mapping[str, Position]:
        return MappingProxyType(self._positions)

    @property
    def realized_pnl(self) -> float:
        """Realised PnL of closed quantities, before fees, account currency."""
        return self._realized

    @property
    def fees_paid(self) -> float:
        return self._fees_paid

    def last_price(self, symbol: str) -> float | None:
        return self._last.get(symbol)

    def currency_of(self, symbol: str) -> str | None:
        """Currency of the symbol's last mark (None before its first bar)."""
        return self._currency_of.get(symbol)

    def position_value(self, position: Position) -> float:
        """Signed market value of a position at its last mark, account currency."""
        mark = self._last.get(position.symbol, position.avg_price)
        return self._fx.to_account(position.quantity * mark, position.currency)

    def positions_value(self) -> float:
        return sum((self.position_value(p) for p in self._positions.values()), 0.0)

    def unrealized_pnl(self) -> float:
        total = 0.0
        for p in self._positions.values():
            mark = self._last.get(p.symbol, p.avg_price)
            total += self._fx.to_account(p.quantity * (mark - p.avg_price), p.currency)
        return total

    def equity(self) -> float:
        return self._cash + self.positions_value()

    @property
    def peak_equity(self) -> float:
        """Highest equity seen at a snapshot, or now if higher."""
        return max(self._peak, self.equity())

    # ------------------------------------------------------------------------------- updates

    def mark(self, bars: Iterable[Bar]) -> None:
        """Remember the last close of each bar's symbol (later bars of a symbol win)."""
        for bar in bars:
            self._last[bar.symbol] = bar.close
            self._currency_of[bar.symbol] = bar.currency

    def apply_fill(self, fill: Fill, *, position_meta: PositionMeta | None = None) -> FillEffect:
        """Book one fill. `position_meta` is required when the fill opens a position.

        Raises `ValueError` (leaving the books unchanged) for a fill that would open or flip a
        position without `position_meta`, or whose currency differs from the open position's.
        """
        symbol = fill.symbol
        signed = fill.quantity if fill.side is Side.BUY else -fill.quantity
        old = self._positions.get(symbol)
        old_qty = old.quantity if old is not None else 0.0
        if old is not None and old.currency != fill.currency:
            raise ValueError(
                f"fill {fill.fill_id} in {fill.currency} for a {old.currency} position in {symbol}"
            )
        fee = self._fx.to_account(fill.fee, fill.fee_currency)
        realized = 0.0
        new: Position | None
        if old is None or old_qty * signed > 0:
            # Open or increase.
            if old is None:
                new = self._open(fill, signed, position_meta)
            else:
                qty = old_qty + signed
                avg = (old_qty * old.avg_price + signed * fill.price) / qty
                stop = old.stop_price
                if position_meta is not None and position_meta.stop_price is not None:
                    stop = position_meta.stop_price
                new = replace(old, quantity=qty, avg_price=avg, stop_price=stop)
        else:
            # Reduce, close or flip.
            size = abs(old_qty)
            traded = abs(signed)
            if abs(traded - size) <= _DUST * size:
                traded = size
            closing = min(traded, size)
            direction = 1.0 if old_qty > 0 else -1.0
            remainder = traded - closing
            if remainder > 0 and position_meta is None:
                raise ValueError(
                    f"fill {fill.fill_id} flips the {symbol} position ({old_qty} -> "
                    f"{old_qty + signed}) and needs position_meta for the new side"
                )
            realized = self._fx.to_account(
                (fill.price - old.avg_price) * closing * direction, fill.currency
            )
            if remainder > 0:
                flipped = -direction * remainder
                new = self._open(fill, flipped, position_meta)
            elif closing == size:
                new = None
            else:
                new = replace(old, quantity=old_qty - direction * closing)
        cash_delta = -self._fx.to_account(signed * fill.price, fill.currency) - fee
        # Commit only after every check passed.
        self._cash += cash_delta
        self._fees_paid += fee
        self._realized += realized
        if new is None:
            self._positions.pop(symbol, None)
        else:
            self._positions[symbol] = new
        self._currency_of.setdefault(symbol, fill.currency)
        return FillEffect(realized_pnl=realized, cash_delta=cash_delta, fee=fee, position=new)

    def _open(self, fill: Fill, signed: float, meta: PositionMeta | None) -> Position:
        if meta is None:
            raise ValueError(
                f"fill {fill.fill_id} opens a {fill.symbol} position and needs position_meta"
            )
        expires_at = meta.expires_at or fill.ts_event + meta.horizon.timedelta
        return Position(
            symbol=fill.symbol,
            quantity=signed,
            avg_price=fill.price,
            currency=fill.currency,
            opened_at=fill.ts_event,
            intent_id=meta.intent_id,
            stop_price=meta.stop_price,
            horizon=meta.horizon,
            expires_at=expires_at,
        )

    def snapshot(self, ts: datetime) -> PortfolioSnapshot:
        """The account at the end of a step; updates the peak equity."""
        positions_value = 0.0
        gross = 0.0
        unrealized = 0.0
        for p in self._positions.values():
            mark = self._last.get(p.symbol, p.avg_price)
            value = self._fx.to_account(p.quantity * mark, p.currency)
            positions_value += value
            gross += abs(value)
            unrealized += self._fx.to_account(p.quantity * (mark - p.avg_price), p.currency)
        equity = self._cash + positions_value
        self._peak = max(self._peak, equity)
        drawdown = 0.0 if self._peak <= 0 else min(1.0, max(0.0, 1.0 - equity / self._peak))
        return PortfolioSnapshot(
            ts=ts,
            cash=self._cash,
            positions_value=positions_value,
            equity=equity,
            gross_exposure=gross,
            realized_pnl=self._realized,
            unrealized_pnl=unrealized,
            fees_paid=self._fees_paid,
            peak_equity=self._peak,
            drawdown=drawdown,
            n_positions=len(self._positions),
        )


__all__ = ["FillEffect", "Portfolio", "PositionMeta"]
