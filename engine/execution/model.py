"""What the decision stages may know about the account: a read-only portfolio view.

The risk stage sizes against this Protocol, not against the concrete `Portfolio`, so it can be
tested with a stub and cannot mutate the books.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from contracts import Horizon


@dataclass(frozen=True, slots=True)
class Position:
    """An open position. Quantity is signed: > 0 long, < 0 short."""

    symbol: str
    quantity: float
    avg_price: float
    """Average entry price in the instrument currency."""
    currency: str
    opened_at: datetime
    intent_id: str
    """The intent that opened it; exits reference it."""
    stop_price: float | None
    horizon: Horizon
    expires_at: datetime
    """When the horizon elapses and the position is closed."""


@dataclass(frozen=True, slots=True)
class PortfolioSnapshot:
    """The account at the end of a step, in the account currency."""

    ts: datetime
    cash: float
    positions_value: float
    equity: float
    gross_exposure: float
    realized_pnl: float
    unrealized_pnl: float
    fees_paid: float
    peak_equity: float
    drawdown: float
    """1 - equity / peak_equity, in [0, 1]."""
    n_positions: int


class PortfolioView(Protocol):
    """Read-only account state for the decision stages."""

    @property
    def cash(self) -> float: ...

    @property
    def positions(self) -> Mapping[str, Position]: ...

    def equity(self) -> float:
        """Cash plus positions marked at the last known prices, account currency."""
        ...

    @property
    def peak_equity(self) -> float: ...

    def last_price(self, symbol: str) -> float | None:
        """Last known price (instrument currency) of a symbol, None before its first bar."""
        ...
