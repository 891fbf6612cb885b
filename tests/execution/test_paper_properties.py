"""Properties of the paper venue over random price paths and random intents."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import Bar, Fill, Order, PositionEffect, Side
from engine.execution.costs import FeeModel
from engine.execution.model import PortfolioSnapshot
from tests.execution import DAY, Venue, bar, day, venue

SYMBOLS = ("AAPL", "MSFT")


@dataclass(frozen=True)
class Move:
    has_bar: bool
    ret: float
    gap: float
    up: float
    down: float


@dataclass(frozen=True)
class Action:
    kind: str  # "none" | "open" | "close"
    quantity: float
    stop_distance: float
    close_fraction: float
    expires_days: int


@dataclass(frozen=True)
class Scenario:
    ohlc: bool
    steps: list[tuple[tuple[Move, Action], ...]]


moves = st.builds(
    Move,
    has_bar=st.sampled_from([True, True, True, True, True, False]),
    ret=st.floats(-0.15, 0.15),
    gap=st.floats(-0.08, 0.08),
    up=st.floats(0.0, 0.05),
    down=st.floats(0.0, 0.05),
)
actions = st.builds(
    Action,
    kind=st.sampled_from(["none", "none", "open", "close"]),
    quantity=st.floats(0.1, 6.0),
    stop_distance=st.floats(0.02, 0.2),
    close_fraction=st.floats(0.2, 1.5),
    expires_days=st.integers(1, 3),
)
scenarios = st.builds(
    Scenario,
    ohlc=st.booleans(),
    steps=st.lists(
        st.tuples(*(st.tuples(moves, actions) for _ in SYMBOLS)), min_size=2, max_size=25
    ),
)


@dataclass
class Run:
    venue: Venue
    events: list[Order | Fill]
    submitted: list[Order]
    intent_ids: set[str]
    snapshots: list[PortfolioSnapshot]
    min_cash: float


def _bars(scenario: Scenario, n: int, closes: dict[str, float]) -> list[Bar]:
    out = []
    for symbol, (move, _) in zip(SYMBOLS, scenario.steps[n], strict=True):
        if not move.has_bar and n > 0:
            continue
        prev = closes[symbol]
        close = prev * (1 + move.ret)
        closes[symbol] = close
        if scenario.ohlc:
            open_ = prev * (1 + move.gap)
            high = max(open_, close) * (1 + move.up)
            low = min(open_, close) * (1 - move.down)
            out.append(bar(symbol, day(n), close, open=open_, high=high, low=low))
        else:
            out.append(bar(symbol, day(n), close))
    return out


def run(
    scenario: Scenario,
    *,
    cash: float = 500.0,
    fees: FeeModel | None = None,
    slippage_bps: float = 5.0,
    seed: int = 11,
) -> Run:
    v = venue(cash=cash, fees=fees, slippage_bps=slippage_bps, seed=seed)
    closes = dict.fromkeys(SYMBOLS, 100.0)
    result = Run(v, [], [], set(), [], cash)
    for n in range(len(scenario.steps)):
        ts = day(n)
        bars = _bars(scenario, n, closes)
        v.clock.advance_to(ts)
        result.events.extend(v.broker.on_bars(bars))
        result.min_cash = min(result.min_cash, v.portfolio.cash)
        v.portfolio.mark(bars)
        for symbol, (_, action) in zip(SYMBOLS, scenario.steps[n], strict=True):
            price = v.portfolio.last_price(symbol)
            position = v.portfolio.positions.get(symbol)
            if action.kind == "open" and price is not None:
                intent = v.intent(
                    symbol,
                    Side.BUY,
                    action.quantity,
                    ts=ts,
                    stop=price * (1 - action.stop_distance),
                    expires_in=action.expires_days * DAY,
                )
            elif action.kind == "close" and position is not None:
                intent = v.intent(
                    symbol,
                    Side.SELL,
                    abs(position.quantity) * action.close_fraction,
                    ts=ts,
                    effect=PositionEffect.CLOSE,
                    expires_in=action.expires_days * DAY,
                )
            else:
                continue
            result.intent_ids.add(intent.intent_id)
            result.submitted.append(v.broker.submit(intent))
        result.snapshots.append(v.portfolio.snapshot(ts))
        result.min_cash = min(result.min_cash, v.portfolio.cash)
    return result


@settings(max_examples=200, deadline=None)
@given(scenarios)
def test_on_bars_when_random_path_and_intents_then_cash_never_negative_and_all_traceable(
    scenario: Scenario,
) -> None:
    # Arrange / Act
    r = run(scenario)
    # Assert
    assert r.min_cash >= 0.0
    known = {o.order_id: o for o in [*r.submitted, *r.events] if isinstance(o, Order)}
    fills = [e for e in r.events if isinstance(e, Fill)]
    for fill in fills:
        order = known[fill.order_id]  # every fill has an order ...
        assert order.intent_id in r.intent_ids  # ... that has an intent
        assert fill.trace_id == order.trace_id
    filled_symbols = {f.symbol for f in fills}
    for symbol, position in r.venue.portfolio.positions.items():
        assert symbol in filled_symbols  # no position without a fill
        assert position.intent_id in r.intent_ids
    for snap in r.snapshots:
        assert abs(snap.cash + snap.positions_value - snap.equity) <= 1e-9 * max(1.0, snap.equity)
    assert r.venue.broker.stats.fills == len(fills)


@settings(max_examples=100, deadline=None)
@given(scenarios)
def test_on_bars_when_same_inputs_and_seed_then_identical_orders_fills_snapshots(
    scenario: Scenario,
) -> None:
    # Arrange / Act
    a = run(scenario, seed=5)
    b = run(scenario, seed=5)
    # Assert
    assert [e.model_dump_json() for e in a.events] == [e.model_dump_json() for e in b.events]
    assert [o.model_dump_json() for o in a.submitted] == [o.model_dump_json() for o in b.submitted]
    assert a.snapshots == b.snapshots


@settings(max_examples=150, deadline=None)
@given(scenarios, st.floats(0.0, 40.0))
def test_equity_when_costs_then_never_above_frictionless_replay_of_same_trades(
    scenario: Scenario, slippage_bps: float
) -> None:
    # Arrange: cash large enough that no order is cut, so both runs make the same trades
    cash = 10_000_000.0
    # Act
    free = run(scenario, cash=cash, fees=FeeModel(0.0, 0.0, 0.0), slippage_bps=0.0)
    costly = run(scenario, cash=cash, fees=FeeModel(1.0, 2.0, 1.0), slippage_bps=slippage_bps)
    # Assert
    assert [f.quantity for f in free.events if isinstance(f, Fill)] == [
        f.quantity for f in costly.events if isinstance(f, Fill)
    ]
    tolerance = 1e-9 * cash
    for a, b in zip(costly.snapshots, free.snapshots, strict=True):
        assert a.equity <= b.equity + tolerance
    stats = costly.venue.broker.stats
    lost = free.snapshots[-1].equity - costly.snapshots[-1].equity
    assert abs(lost - (stats.fees_paid + stats.slippage_cost)) <= tolerance
