from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import Fill, Horizon, Side
from engine.execution.costs import FeeModel
from engine.execution.model import PortfolioView
from engine.execution.portfolio import Portfolio, PositionMeta
from tests.execution import FX, RATE, T0, bar, day

_ids = itertools.count(1)
META = PositionMeta(intent_id="a" * 32, horizon=Horizon.D1, stop_price=None)


def fill(
    symbol: str, side: Side, quantity: float, price: float, fee: float = 0.0, n: int = 0
) -> Fill:
    return Fill(
        trace_id=f"{next(_ids):032x}",
        ts_event=day(n),
        ts_init=day(n),
        fill_id=f"{next(_ids):032x}",
        order_id=f"{next(_ids):032x}",
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=price,
        fee=fee,
    )


# ------------------------------------------------------------------------------------- examples


def test_portfolio_when_used_as_view_then_satisfies_protocol() -> None:
    # Arrange
    portfolio = Portfolio(initial_cash=500.0, fx=FX)
    # Act
    view: PortfolioView = portfolio
    # Assert
    assert view.cash == 500.0
    assert view.equity() == 500.0
    assert view.peak_equity == 500.0
    assert view.last_price("AAPL") is None
    assert dict(view.positions) == {}


def test_apply_fill_when_buying_then_cash_drops_by_converted_notional_and_fee() -> None:
    # Arrange
    portfolio = Portfolio(initial_cash=500.0, fx=FX)
    # Act
    effect = portfolio.apply_fill(fill("AAPL", Side.BUY, 2.0, 108.0, fee=1.0), position_meta=META)
    # Assert
    assert portfolio.cash == pytest.approx(500.0 - 200.0 - 1.0)
    assert effect.position is not None
    assert effect.position.quantity == 2.0
    assert effect.position.avg_price == 108.0
    assert effect.position.opened_at == day(0)
    assert effect.position.expires_at == day(0) + Horizon.D1.timedelta
    assert portfolio.fees_paid == 1.0
    assert portfolio.equity() == pytest.approx(299.0 + 200.0)


def test_apply_fill_when_adding_then_average_price_is_weighted() -> None:
    # Arrange
    portfolio = Portfolio(initial_cash=5_000.0, fx=FX)
    portfolio.apply_fill(fill("AAPL", Side.BUY, 1.0, 100.0), position_meta=META)
    # Act
    portfolio.apply_fill(fill("AAPL", Side.BUY, 3.0, 120.0), position_meta=META)
    # Assert
    assert portfolio.positions["AAPL"].quantity == 4.0
    assert portfolio.positions["AAPL"].avg_price == pytest.approx(115.0)


def test_apply_fill_when_partially_closing_long_then_realizes_pnl_in_account_ccy() -> None:
    # Arrange
    portfolio = Portfolio(initial_cash=5_000.0, fx=FX)
    portfolio.apply_fill(fill("AAPL", Side.BUY, 4.0, 100.0), position_meta=META)
    # Act
    effect = portfolio.apply_fill(fill("AAPL", Side.SELL, 1.0, 110.8, fee=1.0))
    # Assert
    assert effect.realized_pnl == pytest.approx(10.8 / RATE)
    assert portfolio.realized_pnl == pytest.approx(10.0)
    assert portfolio.positions["AAPL"].quantity == 3.0
    assert portfolio.positions["AAPL"].avg_price == 100.0


def test_apply_fill_when_covering_short_at_lower_price_then_realizes_gain() -> None:
    # Arrange
    portfolio = Portfolio(initial_cash=5_000.0, fx=FX)
    portfolio.apply_fill(fill("TSLA", Side.SELL, 2.0, 200.0), position_meta=META)
    # Act
    effect = portfolio.apply_fill(fill("TSLA", Side.BUY, 2.0, 189.2))
    # Assert
    assert effect.position is None
    assert "TSLA" not in portfolio.positions
    assert effect.realized_pnl == pytest.approx(2 * 10.8 / RATE)
    assert portfolio.cash == pytest.approx(5_000.0 + 20.0)


def test_apply_fill_when_flipping_with_meta_then_closes_and_opens_remainder() -> None:
    # Arrange
    portfolio = Portfolio(initial_cash=5_000.0, fx=FX)
    portfolio.apply_fill(fill("AAPL", Side.BUY, 2.0, 100.0), position_meta=META)
    # Act
    effect = portfolio.apply_fill(fill("AAPL", Side.SELL, 5.0, 108.0, n=1), position_meta=META)
    # Assert
    assert effect.realized_pnl == pytest.approx(2 * 8.0 / RATE)
    assert effect.position is not None
    assert effect.position.quantity == -3.0
    assert effect.position.avg_price == 108.0
    assert effect.position.opened_at == day(1)


def test_apply_fill_when_flipping_without_meta_then_rejected_and_books_unchanged() -> None:
    # Arrange
    portfolio = Portfolio(initial_cash=5_000.0, fx=FX)
    portfolio.apply_fill(fill("AAPL", Side.BUY, 2.0, 100.0), position_meta=META)
    cash = portfolio.cash
    # Act / Assert
    with pytest.raises(ValueError, match="flips"):
        portfolio.apply_fill(fill("AAPL", Side.SELL, 5.0, 108.0))
    assert portfolio.cash == cash
    assert portfolio.positions["AAPL"].quantity == 2.0


def test_apply_fill_when_opening_without_meta_then_rejected() -> None:
    # Arrange
    portfolio = Portfolio(initial_cash=500.0, fx=FX)
    # Act / Assert
    with pytest.raises(ValueError, match="position_meta"):
        portfolio.apply_fill(fill("AAPL", Side.BUY, 1.0, 100.0))
    assert portfolio.cash == 500.0
    assert dict(portfolio.positions) == {}


def test_snapshot_when_equity_falls_after_peak_then_drawdown_from_peak() -> None:
    # Arrange
    portfolio = Portfolio(initial_cash=1_000.0, fx=FX)
    portfolio.apply_fill(fill("AAPL", Side.BUY, 5.0, 108.0), position_meta=META)
    portfolio.mark([bar("AAPL", day(1), 216.0)])
    high = portfolio.snapshot(day(1))
    # Act
    portfolio.mark([bar("AAPL", day(2), 108.0)])
    low = portfolio.snapshot(day(2))
    # Assert
    assert high.equity == pytest.approx(1_500.0)
    assert high.peak_equity == pytest.approx(1_500.0)
    assert low.peak_equity == pytest.approx(1_500.0)
    assert low.drawdown == pytest.approx(1 - 1_000.0 / 1_500.0)
    assert low.gross_exposure == pytest.approx(500.0)
    assert low.unrealized_pnl == pytest.approx(0.0)
    assert low.n_positions == 1


def test_mark_when_several_bars_of_symbol_then_last_close_wins() -> None:
    # Arrange
    portfolio = Portfolio(initial_cash=500.0, fx=FX)
    # Act
    portfolio.mark([bar("AAPL", T0, 10.0), bar("AAPL", day(1), 12.0), bar("MSFT", T0, 3.0)])
    # Assert
    assert portfolio.last_price("AAPL") == 12.0
    assert portfolio.last_price("MSFT") == 3.0


# ----------------------------------------------------------------------------------- properties

SYMBOLS = ("AAPL", "MSFT")
prices = st.floats(min_value=1.0, max_value=1_000.0, allow_nan=False)
quantities = st.floats(min_value=0.001, max_value=50.0, allow_nan=False)


@dataclass(frozen=True)
class Trade:
    symbol: str
    side: Side
    quantity: float | None
    """None: close the whole position."""
    price: float


@dataclass(frozen=True)
class Mark:
    symbol: str
    price: float


ops = st.lists(
    st.one_of(
        st.builds(
            Trade,
            st.sampled_from(SYMBOLS),
            st.sampled_from(list(Side)),
            st.one_of(st.none(), quantities),
            prices,
        ),
        st.builds(Mark, st.sampled_from(SYMBOLS), prices),
    ),
    min_size=1,
    max_size=40,
)


def _replay(
    steps: list[Trade | Mark], *, fees: FeeModel | None, slippage_bps: float
) -> tuple[Portfolio, list[float], float, float]:
    """Apply the steps; returns the portfolio, equity after each step, costs and turnover."""
    portfolio = Portfolio(initial_cash=10_000.0, fx=FX)
    portfolio.mark([bar(symbol, T0, 100.0) for symbol in SYMBOLS])
    equities: list[float] = []
    slippage_cost = 0.0
    turnover = 0.0
    for n, step in enumerate(steps):
        if isinstance(step, Mark):
            portfolio.mark([bar(step.symbol, day(n), step.price)])
        else:
            position = portfolio.positions.get(step.symbol)
            side, quantity = step.side, step.quantity
            if quantity is None:
                if position is None:
                    continue
                side = Side.SELL if position.quantity > 0 else Side.BUY
                quantity = abs(position.quantity)
            sign = 1.0 if side is Side.BUY else -1.0
            price = step.price * (1 + sign * slippage_bps * 1e-4)
            notional = FX.to_account(quantity * price, "USD")
            fee = fees.fee(notional) if fees is not None else 0.0
            portfolio.apply_fill(
                fill(step.symbol, side, quantity, price, fee=fee, n=n), position_meta=META
            )
            slippage_cost += FX.to_account(abs(price - step.price) * quantity, "USD")
            turnover += notional
        equities.append(portfolio.equity())
    return portfolio, equities, slippage_cost, turnover


@settings(max_examples=300, deadline=None)
@given(ops)
def test_snapshot_when_random_fills_and_marks_then_bookkeeping_identities_hold(
    steps: list[Trade | Mark],
) -> None:
    # Arrange
    portfolio = Portfolio(initial_cash=10_000.0, fx=FX)
    net: dict[str, float] = dict.fromkeys(SYMBOLS, 0.0)
    filled: set[str] = set()
    scale = 10_000.0
    for n, step in enumerate(steps):
        # Act
        if isinstance(step, Mark):
            portfolio.mark([bar(step.symbol, day(n), step.price)])
        else:
            position = portfolio.positions.get(step.symbol)
            side, quantity = step.side, step.quantity
            if quantity is None:
                if position is None:
                    continue
                side = Side.SELL if position.quantity > 0 else Side.BUY
                quantity = abs(position.quantity)
            portfolio.apply_fill(
                fill(step.symbol, side, quantity, step.price, fee=1.0, n=n), position_meta=META
            )
            net[step.symbol] += quantity if side is Side.BUY else -quantity
            filled.add(step.symbol)
            scale += FX.to_account(quantity * step.price, "USD")
        snap = portfolio.snapshot(day(n))
        # Assert
        assert math.isclose(snap.cash + snap.positions_value, snap.equity, rel_tol=1e-9)
        identity = portfolio.initial_cash + snap.realized_pnl + snap.unrealized_pnl - snap.fees_paid
        assert math.isclose(identity, snap.equity, rel_tol=1e-9, abs_tol=1e-9 * scale)
        assert snap.peak_equity >= snap.equity
        assert 0.0 <= snap.drawdown <= 1.0
        for symbol, position in portfolio.positions.items():
            assert symbol in filled  # no position without a fill
            assert math.isclose(position.quantity, net[symbol], abs_tol=1e-9 * scale)
        for symbol in SYMBOLS:
            if symbol not in portfolio.positions:
                assert abs(net[symbol]) <= 1e-9 * scale


@settings(max_examples=300, deadline=None)
@given(ops, st.floats(min_value=0.0, max_value=50.0))
def test_equity_when_fees_and_slippage_then_below_frictionless_replay_by_their_cost(
    steps: list[Trade | Mark], slippage_bps: float
) -> None:
    # Arrange
    fees = FeeModel(fixed=1.0, bps=5.0, minimum=1.5)
    # Act
    free, free_equity, _, _ = _replay(steps, fees=None, slippage_bps=0.0)
    costly, costly_equity, slippage_cost, turnover = _replay(
        steps, fees=fees, slippage_bps=slippage_bps
    )
    # Assert
    tolerance = 1e-9 * (10_000.0 + turnover)
    for a, b in zip(costly_equity, free_equity, strict=True):
        assert a <= b + tolerance
    if costly_equity:
        lost = free_equity[-1] - costly_equity[-1]
        assert lost == pytest.approx(costly.fees_paid + slippage_cost, abs=tolerance)
    assert free.fees_paid == 0.0
