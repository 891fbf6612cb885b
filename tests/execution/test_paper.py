from __future__ import annotations

import pytest

from contracts import Fill, Intent, Order, OrderStatus, OrderType, PositionEffect, Side
from engine.execution.costs import FeeModel
from tests.execution import DAY, FX, RATE, Venue, bar, day, venue


def fills(events: list[object]) -> list[Fill]:
    return [e for e in events if isinstance(e, Fill)]


def orders(events: list[object]) -> list[Order]:
    return [e for e in events if isinstance(e, Order)]


def open_long(v: Venue, quantity: float = 2.0, stop: float | None = 90.0) -> Intent:
    """Day 0: AAPL closes at 100; a long entry is submitted; day 1 fills it at 101 (open)."""
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    intent = v.intent("AAPL", Side.BUY, quantity, ts=day(0), stop=stop)
    v.broker.submit(intent)
    v.step(day(1), [bar("AAPL", day(1), 102.0, open=101.0, high=103.0, low=100.0)])
    return intent


# ----------------------------------------------------------------------------- fills and costs


def test_on_bars_when_order_pending_then_fills_at_next_bar_open() -> None:
    # Arrange
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    intent = v.intent("AAPL", Side.BUY, 2.0, ts=day(0))
    submitted = v.broker.submit(intent)
    # Act
    events = v.step(day(1), [bar("AAPL", day(1), 102.0, open=101.0, high=103.0, low=100.0)])
    # Assert
    assert submitted.status is OrderStatus.SUBMITTED
    assert submitted.order_type is OrderType.MARKET
    assert submitted.intent_id == intent.intent_id
    assert submitted.trace_id == intent.trace_id
    assert submitted.ts_event == intent.ts_event
    assert submitted.ts_init == day(0)
    [fill] = fills(events)
    assert fill.price == 101.0
    assert fill.order_id == submitted.order_id
    assert fill.trace_id == intent.trace_id
    assert fill.ts_event == day(1)
    assert fill.fee == 1.0
    assert fill.fee_currency == "EUR"
    [done] = orders(events)
    assert done.order_id == submitted.order_id
    assert done.status is OrderStatus.FILLED
    assert v.portfolio.positions["AAPL"].quantity == 2.0


def test_on_bars_when_bar_is_close_only_then_fills_at_close() -> None:
    # Arrange
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    v.broker.submit(v.intent("AAPL", Side.BUY, 2.0, ts=day(0)))
    # Act
    events = v.step(day(1), [bar("AAPL", day(1), 104.0)])
    # Assert
    assert [f.price for f in fills(events)] == [104.0]


def test_on_bars_when_bar_is_of_decision_step_then_order_waits_for_next_bar() -> None:
    # Arrange
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    v.broker.submit(v.intent("AAPL", Side.BUY, 2.0, ts=day(0)))
    # Act
    same = v.broker.on_bars([bar("AAPL", day(0), 100.0)])
    later = v.step(day(1), [bar("AAPL", day(1), 99.0)])
    # Assert
    assert same == []
    assert len(fills(later)) == 1


def test_on_bars_when_symbol_gets_no_bar_then_order_keeps_waiting() -> None:
    # Arrange
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0), bar("MSFT", day(0), 50.0)])
    submitted = v.broker.submit(v.intent("AAPL", Side.BUY, 1.0, ts=day(0)))
    # Act
    events = v.step(day(1), [bar("MSFT", day(1), 51.0)])
    # Assert
    assert events == []
    assert v.broker.pending_orders == (submitted,)


@pytest.mark.parametrize(("side", "expected"), [(Side.BUY, 100.5), (Side.SELL, 99.5)])
def test_fill_when_slippage_configured_then_price_moves_against_trader(
    side: Side, expected: float
) -> None:
    # Arrange
    v = venue(slippage_bps=50.0, allow_short=True, cash=5_000.0)
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    v.broker.submit(v.intent("AAPL", side, 2.0, ts=day(0)))
    # Act
    events = v.step(day(1), [bar("AAPL", day(1), 100.0)])
    # Assert
    [fill] = fills(events)
    assert fill.price == pytest.approx(expected)
    assert fill.slippage_bps == 50.0
    assert v.broker.stats.slippage_cost == pytest.approx(2 * 0.5 / RATE)


@pytest.mark.parametrize(
    ("quantity", "expected_fee"),
    [
        (1.0, 2.0),  # 100 EUR notional: 1 + 0.1 -> minimum 2
        (100.0, 11.0),  # 10,000 EUR notional: 1 + 10
    ],
)
def test_fill_when_fee_model_has_minimum_and_bps_then_charges_formula(
    quantity: float, expected_fee: float
) -> None:
    # Arrange
    v = venue(cash=100_000.0, fees=FeeModel(fixed=1.0, bps=10.0, minimum=2.0))
    v.step(day(0), [bar("AAPL", day(0), 108.0)])
    v.broker.submit(v.intent("AAPL", Side.BUY, quantity, ts=day(0)))
    # Act
    events = v.step(day(1), [bar("AAPL", day(1), 108.0)])
    # Assert
    [fill] = fills(events)
    assert fill.fee == pytest.approx(expected_fee)
    assert v.broker.stats.fees_paid == pytest.approx(expected_fee)
    assert v.broker.stats.turnover == pytest.approx(quantity * 108.0 / RATE)
    assert v.portfolio.cash == pytest.approx(100_000.0 - quantity * 100.0 - expected_fee)


# ------------------------------------------------------------------------------------- stops


def test_on_bars_when_entry_with_stop_fills_then_resting_stop_placed() -> None:
    # Arrange
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    intent = v.intent("AAPL", Side.BUY, 2.0, ts=day(0), stop=90.0)
    v.broker.submit(intent)
    # Act
    events = v.step(day(1), [bar("AAPL", day(1), 102.0, open=101.0, high=103.0, low=95.0)])
    # Assert
    stops = [o for o in orders(events) if o.order_type is OrderType.STOP]
    assert len(stops) == 1
    stop = stops[0]
    assert stop.status is OrderStatus.ACCEPTED
    assert stop.intent_id == intent.intent_id
    assert stop.trace_id == intent.trace_id
    assert stop.side is Side.SELL
    assert stop.quantity == 2.0
    assert stop.stop_price == 90.0
    assert v.broker.resting_stops == (stop,)
    assert v.portfolio.positions["AAPL"].stop_price == 90.0


def test_on_bars_when_low_trades_through_stop_then_fills_at_stop() -> None:
    # Arrange
    v = venue()
    open_long(v, stop=90.0)
    stop = v.broker.stop_for("AAPL")
    assert stop is not None
    # Act
    events = v.step(day(2), [bar("AAPL", day(2), 92.0, open=95.0, high=96.0, low=88.0)])
    # Assert
    [fill] = fills(events)
    assert fill.price == 90.0
    assert fill.order_id == stop.order_id
    assert fill.side is Side.SELL
    assert [o.status for o in orders(events)] == [OrderStatus.FILLED]
    assert "AAPL" not in v.portfolio.positions
    assert v.broker.resting_stops == ()
    assert v.broker.stats.stops_triggered == 1


def test_on_bars_when_bar_gaps_through_stop_then_fills_at_open() -> None:
    # Arrange
    v = venue()
    open_long(v, stop=90.0)
    # Act
    events = v.step(day(2), [bar("AAPL", day(2), 86.0, open=85.0, high=87.0, low=84.0)])
    # Assert
    assert [f.price for f in fills(events)] == [85.0]


def test_on_bars_when_close_only_bar_below_stop_then_fills_at_close_beyond_plan() -> None:
    # Arrange: close-only data, the stop is only observed at the close
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    v.broker.submit(v.intent("AAPL", Side.BUY, 2.0, ts=day(0), stop=90.0))
    v.step(day(1), [bar("AAPL", day(1), 100.0)])
    # Act
    quiet = v.step(day(2), [bar("AAPL", day(2), 91.0)])
    events = v.step(day(3), [bar("AAPL", day(3), 80.0)])
    # Assert
    assert quiet == []
    [fill] = fills(events)
    assert fill.price == 80.0
    assert v.portfolio.realized_pnl == pytest.approx(2 * (80.0 - 100.0) / RATE)
    assert -v.portfolio.realized_pnl > 2 * (100.0 - 90.0) / RATE  # worse than planned


def test_on_bars_when_short_and_high_reaches_stop_then_buys_back_at_stop() -> None:
    # Arrange
    v = venue(allow_short=True, slippage_bps=10.0)
    v.step(day(0), [bar("TSLA", day(0), 200.0)])
    v.broker.submit(v.intent("TSLA", Side.SELL, 1.0, ts=day(0), stop=220.0))
    opened = v.step(day(1), [bar("TSLA", day(1), 200.0, open=200.0, high=205.0, low=199.0)])
    # Act
    events = v.step(day(2), [bar("TSLA", day(2), 215.0, open=210.0, high=225.0, low=209.0)])
    # Assert
    [stop] = [o for o in orders(opened) if o.order_type is OrderType.STOP]
    assert stop.side is Side.BUY
    [fill] = fills(events)
    assert fill.side is Side.BUY
    assert fill.price == pytest.approx(220.0 * 1.001)
    assert "TSLA" not in v.portfolio.positions


def test_on_bars_when_entry_bar_falls_through_new_stop_then_stopped_same_bar() -> None:
    # Arrange
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    v.broker.submit(v.intent("AAPL", Side.BUY, 1.0, ts=day(0), stop=95.0))
    # Act
    events = v.step(day(1), [bar("AAPL", day(1), 94.0, open=100.0, high=100.0, low=93.0)])
    # Assert
    assert [(f.side, f.price) for f in fills(events)] == [(Side.BUY, 100.0), (Side.SELL, 95.0)]
    assert dict(v.portfolio.positions) == {}


def test_on_bars_when_adding_with_new_stop_then_one_stop_for_whole_position() -> None:
    # Arrange
    v = venue(cash=5_000.0)
    first = open_long(v, quantity=2.0, stop=90.0)
    old = v.broker.stop_for("AAPL")
    second = v.intent("AAPL", Side.BUY, 1.0, ts=day(1), stop=95.0)
    v.broker.submit(second)
    # Act
    events = v.step(day(2), [bar("AAPL", day(2), 105.0)])
    # Assert
    new = v.broker.stop_for("AAPL")
    assert old is not None
    assert new is not None
    assert (new.quantity, new.stop_price, new.intent_id) == (3.0, 95.0, second.intent_id)
    assert v.broker.resting_stops == (new,)
    assert (old.order_id, OrderStatus.CANCELED) in {(o.order_id, o.status) for o in orders(events)}
    assert v.portfolio.positions["AAPL"].intent_id == first.intent_id
    assert v.portfolio.positions["AAPL"].quantity == 3.0


# ------------------------------------------------------------------------------------ closes


def test_on_bars_when_close_intent_fills_then_position_flat_and_stop_canceled() -> None:
    # Arrange
    v = venue()
    entry = open_long(v, stop=90.0)
    stop = v.broker.stop_for("AAPL")
    assert stop is not None
    close = v.intent("AAPL", Side.SELL, 2.0, ts=day(1), effect=PositionEffect.CLOSE)
    submitted = v.broker.submit(close)
    # Act
    events = v.step(day(2), [bar("AAPL", day(2), 105.0, open=104.0, high=106.0, low=89.0)])
    # Assert
    [fill] = fills(events)
    assert fill.price == 104.0
    assert fill.trace_id == close.trace_id
    by_id = {o.order_id: o.status for o in orders(events)}
    assert by_id == {submitted.order_id: OrderStatus.FILLED, stop.order_id: OrderStatus.CANCELED}
    assert dict(v.portfolio.positions) == {}
    assert v.broker.resting_stops == ()
    assert v.portfolio.realized_pnl == pytest.approx(2 * 3.0 / RATE)
    assert entry.intent_id == stop.intent_id


def test_on_bars_when_partial_close_then_stop_resized_to_remaining_position() -> None:
    # Arrange
    v = venue()
    open_long(v, quantity=3.0, stop=90.0)
    old = v.broker.stop_for("AAPL")
    assert old is not None
    v.broker.submit(v.intent("AAPL", Side.SELL, 1.0, ts=day(1), effect=PositionEffect.CLOSE))
    # Act
    events = v.step(day(2), [bar("AAPL", day(2), 105.0, open=104.0, high=106.0, low=103.0)])
    # Assert
    assert v.portfolio.positions["AAPL"].quantity == 2.0
    new = v.broker.stop_for("AAPL")
    assert new is not None
    assert (new.quantity, new.stop_price, new.intent_id) == (2.0, 90.0, old.intent_id)
    assert old.order_id in {o.order_id for o in orders(events) if o.status is OrderStatus.CANCELED}


def test_on_bars_when_close_larger_than_position_then_flattens_without_flip() -> None:
    # Arrange
    v = venue()
    open_long(v, quantity=2.0)
    v.broker.submit(v.intent("AAPL", Side.SELL, 5.0, ts=day(1), effect=PositionEffect.CLOSE))
    # Act
    events = v.step(day(2), [bar("AAPL", day(2), 105.0)])
    # Assert
    assert [f.quantity for f in fills(events)] == [2.0]
    assert dict(v.portfolio.positions) == {}


def test_submit_when_position_already_stopped_out_then_close_rejected() -> None:
    # Arrange
    v = venue()
    open_long(v, stop=90.0)
    v.step(day(2), [bar("AAPL", day(2), 85.0)])  # stopped out at the close
    # Act
    close = v.broker.submit(
        v.intent("AAPL", Side.SELL, 2.0, ts=day(1), effect=PositionEffect.CLOSE)
    )
    events = v.step(day(3), [bar("AAPL", day(3), 86.0)])
    # Assert
    assert close.status is OrderStatus.REJECTED
    assert "no position" in (v.broker.reason(close.order_id) or "")
    assert events == []


def test_on_bars_when_position_flattened_before_pending_close_then_close_canceled() -> None:
    # Arrange: two closes pending; the first flattens the position
    v = venue()
    open_long(v, stop=90.0)
    first = v.broker.submit(
        v.intent("AAPL", Side.SELL, 2.0, ts=day(1), effect=PositionEffect.CLOSE)
    )
    second = v.broker.submit(
        v.intent("AAPL", Side.SELL, 2.0, ts=day(1), effect=PositionEffect.CLOSE)
    )
    # Act
    events = v.step(day(2), [bar("AAPL", day(2), 100.0)])
    # Assert
    statuses = {o.order_id: o.status for o in orders(events)}
    assert statuses[first.order_id] is OrderStatus.FILLED
    assert statuses[second.order_id] is OrderStatus.CANCELED
    assert v.broker.reason(second.order_id) == "position already flat"
    assert len(fills(events)) == 1


# ----------------------------------------------------------------------------------- expiry


def test_on_bars_when_intent_expires_before_next_bar_then_order_expired() -> None:
    # Arrange
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    submitted = v.broker.submit(v.intent("AAPL", Side.BUY, 1.0, ts=day(0), expires_in=DAY))
    # Act
    events = v.step(day(3), [bar("AAPL", day(3), 101.0)])
    # Assert
    [expired] = orders(events)
    assert expired.order_id == submitted.order_id
    assert expired.status is OrderStatus.EXPIRED
    assert fills(events) == []
    assert v.broker.pending_orders == ()
    assert v.broker.stats.expired == 1


def test_on_bars_when_expiry_passes_on_other_symbols_bar_then_order_expired() -> None:
    # Arrange
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0), bar("MSFT", day(0), 50.0)])
    submitted = v.broker.submit(v.intent("AAPL", Side.BUY, 1.0, ts=day(0), expires_in=DAY))
    # Act
    at_expiry = v.step(day(1), [bar("MSFT", day(1), 51.0)])
    after = v.step(day(2), [bar("MSFT", day(2), 52.0)])
    # Assert
    assert at_expiry == []
    assert [(o.order_id, o.status) for o in orders(after)] == [
        (submitted.order_id, OrderStatus.EXPIRED)
    ]


def test_on_bars_when_bar_exactly_at_expiry_then_still_fills() -> None:
    # Arrange
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    v.broker.submit(v.intent("AAPL", Side.BUY, 1.0, ts=day(0), expires_in=DAY))
    # Act
    events = v.step(day(1), [bar("AAPL", day(1), 101.0)])
    # Assert
    assert len(fills(events)) == 1


# ------------------------------------------------------------------------------------- cash


def test_on_bars_when_price_rose_beyond_cash_then_partially_filled_and_cash_non_negative() -> None:
    # Arrange: €500 account; 5 shares at $100 = €463 + €1 fee fits at the reference price
    v = venue(cash=500.0)
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    submitted = v.broker.submit(v.intent("AAPL", Side.BUY, 5.0, ts=day(0)))
    # Act: opens 20 % higher
    events = v.step(day(1), [bar("AAPL", day(1), 120.0)])
    # Assert
    [fill] = fills(events)
    assert 2.5 <= fill.quantity < 5.0
    assert [o.status for o in orders(events)] == [
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.CANCELED,
    ]
    assert v.broker.reason(submitted.order_id) is not None
    assert "insufficient cash" in (v.broker.reason(submitted.order_id) or "")
    assert v.portfolio.cash >= 1.0  # the exit fee stays available
    assert v.broker.stats.partial_fills == 1


def test_on_bars_when_cash_allows_less_than_min_fraction_then_rejected() -> None:
    # Arrange
    v = venue(cash=500.0)
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    submitted = v.broker.submit(v.intent("AAPL", Side.BUY, 5.0, ts=day(0)))
    # Act: price tripled
    events = v.step(day(1), [bar("AAPL", day(1), 300.0)])
    # Assert
    assert fills(events) == []
    [rejected] = orders(events)
    assert rejected.order_id == submitted.order_id
    assert rejected.status is OrderStatus.REJECTED
    assert "insufficient cash" in (v.broker.reason(submitted.order_id) or "")
    assert v.portfolio.cash == 500.0


def test_on_bars_when_tiny_sales_exceed_cash_for_fees_then_fee_capped_cash_not_negative() -> None:
    # Arrange: fully invested, then closes so small that each sale yields less than its fee
    v = venue(cash=500.0)
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    v.broker.submit(v.intent("AAPL", Side.BUY, 5.3, ts=day(0)))
    v.step(day(1), [bar("AAPL", day(1), 100.0)])
    # Act
    for n in range(2, 12):
        v.broker.submit(
            v.intent("AAPL", Side.SELL, 0.001, ts=day(n - 1), effect=PositionEffect.CLOSE)
        )
        v.step(day(n), [bar("AAPL", day(n), 100.0)])
        # Assert
        assert v.portfolio.cash >= 0.0
    assert v.broker.stats.fee_waived > 0.0


# --------------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("arrange", "message"),
    [
        ("unknown_symbol", "no price"),
        ("close_without_position", "no position"),
        ("short_disabled", "short selling is disabled"),
        ("stop_above_entry", "wrong side"),
        ("against_position", "close it first"),
    ],
)
def test_submit_when_intent_not_executable_then_rejected_with_reason(
    arrange: str, message: str
) -> None:
    # Arrange
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    if arrange == "unknown_symbol":
        intent = v.intent("NVDA", Side.BUY, 1.0, ts=day(0), price_ref=10.0)
    elif arrange == "close_without_position":
        intent = v.intent("AAPL", Side.SELL, 1.0, ts=day(0), effect=PositionEffect.CLOSE)
    elif arrange == "short_disabled":
        intent = v.intent("AAPL", Side.SELL, 1.0, ts=day(0))
    elif arrange == "stop_above_entry":
        intent = v.intent("AAPL", Side.BUY, 1.0, ts=day(0), stop=101.0)
    else:
        open_long(v)
        intent = v.intent("AAPL", Side.SELL, 1.0, ts=day(1))
    # Act
    order = v.broker.submit(intent)
    # Assert
    assert order.status is OrderStatus.REJECTED
    assert message in (v.broker.reason(order.order_id) or "")
    assert order.order_id not in {o.order_id for o in v.broker.pending_orders}


def test_submit_when_limit_order_then_rejected() -> None:
    # Arrange
    v = venue()
    v.step(day(0), [bar("AAPL", day(0), 100.0)])
    intent = v.intent("AAPL", Side.BUY, 1.0, ts=day(0)).model_copy(
        update={"order_type": OrderType.LIMIT, "limit_price": 99.0}
    )
    # Act
    order = v.broker.submit(intent)
    # Assert
    assert order.status is OrderStatus.REJECTED
    assert "market orders only" in (v.broker.reason(order.order_id) or "")


def test_broker_when_constructed_with_negative_slippage_then_value_error() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValueError, match="slippage_bps"):
        venue(slippage_bps=-1.0)


def test_stats_when_round_trip_then_counts_orders_fills_fees_and_turnover() -> None:
    # Arrange
    v = venue(slippage_bps=10.0)
    open_long(v, stop=90.0)
    v.broker.submit(v.intent("AAPL", Side.SELL, 2.0, ts=day(1), effect=PositionEffect.CLOSE))
    # Act
    v.step(day(2), [bar("AAPL", day(2), 110.0)])
    # Assert
    stats = v.broker.stats
    assert stats.orders == 3  # entry, stop, close
    assert stats.fills == 2
    assert stats.canceled == 1  # the stop
    assert stats.fees_paid == pytest.approx(2.0)
    buy, sell = 101.0 * 1.001, 110.0 * 0.999
    assert stats.turnover == pytest.approx(FX.to_account(2 * (buy + sell), "USD"))
    assert stats.slippage_cost == pytest.approx(FX.to_account(2 * (101.0 + 110.0) * 1e-3, "USD"))
