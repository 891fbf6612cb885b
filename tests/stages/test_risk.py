"""RiskStage: sizing with fees inside the budget, every denial reason, states, exits."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from config.models import RiskConfig
from contracts import (
    DecisionKind,
    DecisionLog,
    DenialReason,
    Horizon,
    IdGenerator,
    Opportunity,
    PositionEffect,
    Side,
)
from engine.execution.costs import FeeModel, FxConverter
from engine.stages.risk import (
    CLOSE_ORDER_TTL,
    RiskStage,
    TradingState,
    max_quantity_for_budget,
    max_quantity_for_cash,
)
from tests.stages.factories import T0, StubPortfolio, make_opportunity, make_position

HASH = "ab" * 32
NOW = T0 + timedelta(seconds=1)
EURUSD = 1.08
FX = FxConverter(account_currency="EUR", rates={"USD": EURUSD})
DEFAULT_FEES = FeeModel(fixed=1.0, bps=0.0, minimum=1.0)


def _stage(
    *, fees: FeeModel = DEFAULT_FEES, slippage_bps: float = 5.0, seed: int = 1, **risk: Any
) -> RiskStage:
    # The sizing tests isolate the sizing rules; the edge-over-costs rule has its own tests.
    risk.setdefault("min_edge_over_costs", 0.0)
    return RiskStage(
        config=RiskConfig(**risk),
        fees=fees,
        fx=FX,
        slippage_bps=slippage_bps,
        ids=IdGenerator(seed),
        config_hash=HASH,
        model_version="risk-v0",
    )


def _portfolio(**kw: Any) -> StubPortfolio:
    kw.setdefault("prices", {"AAPL": 200.0, "MSFT": 400.0, "F": 12.0})
    return StubPortfolio(**kw)


def _one(decisions: list[DecisionLog]) -> DecisionLog:
    assert len(decisions) == 1
    return decisions[0]


# --------------------------------------------------------------------------- the concrete example


def test_decide_when_default_500_eur_account_then_aapl_sized_to_5_eur_risk_by_hand() -> None:
    # Arrange: EUR 500, 1 % = EUR 5 budget, EUR 1 fee per order (min 1), 5 bps slippage,
    # AAPL at $200, daily sigma 2 %, stop 2 sigma below, EURUSD 1.08, fractional shares.
    stage = _stage()
    opp = make_opportunity("AAPL", mu=0.001, sigma=0.02, cvar=0.05)
    # By hand:
    #   stop            = 200 * (1 - 2 * 0.02)         = $192
    #   loss per share  = ($8 + 2 * 0.0005 * $200) / 1.08 = $8.20 / 1.08 = EUR 7.592593
    #   fees            = 2 * EUR 1                    = EUR 2
    #   qty             = (5 - 2) / 7.592593           = 0.3951219... -> 0.395121 (6 decimals)
    #   notional        = 0.395121 * $200              = $79.0242 = EUR 73.1706
    #   caps: 25 % weight = EUR 125, cash EUR 500 -> not binding
    # Act
    decision = _one(stage.decide(T0, NOW, [opp], _portfolio()))
    # Assert
    assert decision.kind is DecisionKind.INTENT
    intent = decision.intent
    assert intent is not None
    assert intent.side is Side.BUY
    assert intent.effect is PositionEffect.OPEN
    assert intent.quantity == 0.395121
    assert intent.stop_price == pytest.approx(192.0)
    assert intent.price_ref == 200.0
    assert intent.notional == pytest.approx(79.0242)
    assert intent.currency == "USD"
    assert intent.risk_budget == pytest.approx(0.395121 * 8.2 / 1.08 + 2.0)
    assert intent.risk_budget <= 5.0
    assert intent.cvar_contribution == pytest.approx(79.0242 / 1.08 * 0.05)
    assert intent.trace_id == opp.trace_id
    assert (intent.ts_event, intent.ts_init) == (T0, NOW)
    assert intent.expires_at == T0 + timedelta(days=1)
    assert intent.horizon is Horizon.D1
    assert decision.inputs["budget"] == pytest.approx(5.0)
    assert decision.inputs["stop"] == pytest.approx(192.0)
    assert decision.inputs["binding"] == "risk_budget"
    assert decision.inputs["state"] == "active"
    assert decision.model_version == "risk-v0"
    assert decision.config_hash == HASH


def test_decide_when_whole_shares_then_quantity_rounded_down_to_integer() -> None:
    # Arrange: F at $12: loss/share = (12*0.04 + 0.012)/1.08 = EUR 0.455556 -> 3/0.4556 = 6.58
    stage = _stage(fractional_shares=False)
    opp = make_opportunity("F", mu=0.001, sigma=0.02)
    # Act
    decision = _one(stage.decide(T0, NOW, [opp], _portfolio()))
    # Assert
    assert decision.intent is not None
    assert decision.intent.quantity == 6.0


# --------------------------------------------------------------------------- fee branches


def _brute_force(budget: float, loss: float, price: float, fees: FeeModel) -> float:
    """Largest q with q*loss + 2*fee(q*price) <= budget, by bisection (g is increasing)."""

    def g(q: float) -> float:
        return q * loss + 2.0 * fees.fee(q * price)

    if g(0.0) > budget:
        return 0.0
    lo, hi = 0.0, budget / loss + 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if g(mid) <= budget else (lo, mid)
    return lo


def test_max_quantity_for_budget_when_minimum_fee_binds_then_minimum_branch() -> None:
    # Arrange: fee = max(5, 0 + 10 bps * n); at small notional the EUR 5 minimum applies
    fees = FeeModel(fixed=0.0, bps=10.0, minimum=5.0)
    # Act
    q = max_quantity_for_budget(budget=50.0, loss_per_share=2.0, price_account=100.0, fees=fees)
    # Assert: (50 - 10) / 2 = 20 shares = EUR 2000 notional -> 10 bps = EUR 2 < 5: minimum
    assert q == pytest.approx(20.0)
    assert fees.fee(q * 100.0) == 5.0


def test_max_quantity_for_budget_when_proportional_fee_binds_then_linear_branch() -> None:
    # Arrange: 50 bps: at the size the budget allows, the proportional fee exceeds the minimum
    fees = FeeModel(fixed=0.5, bps=50.0, minimum=1.0)
    # Act
    q = max_quantity_for_budget(budget=100.0, loss_per_share=2.0, price_account=100.0, fees=fees)
    # Assert: q * 2 + 2 * (0.5 + 0.005 * 100 q) = 100 -> q = 99 / 3 = 33
    assert q == pytest.approx(33.0)
    assert fees.fee(q * 100.0) > fees.minimum
    assert q * 2.0 + 2.0 * fees.fee(q * 100.0) == pytest.approx(100.0)


@settings(max_examples=300, deadline=None)
@given(
    budget=st.floats(0.1, 1e5),
    loss=st.floats(1e-3, 1e3),
    price=st.floats(0.01, 1e4),
    fixed=st.floats(0.0, 20.0),
    bps=st.floats(0.0, 100.0),
    minimum=st.floats(0.0, 20.0),
)
def test_max_quantity_for_budget_when_random_fees_then_matches_brute_force(
    budget: float, loss: float, price: float, fixed: float, bps: float, minimum: float
) -> None:
    # Arrange
    fees = FeeModel(fixed=fixed, bps=bps, minimum=minimum)
    # Act
    q = max_quantity_for_budget(budget, loss, price, fees)
    # Assert
    expected = _brute_force(budget, loss, price, fees)
    assert max(q, 0.0) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_max_quantity_for_cash_when_fee_proportional_then_notional_plus_fee_fits_cash() -> None:
    # Arrange
    fees = FeeModel(fixed=0.0, bps=100.0, minimum=1.0)
    # Act
    q = max_quantity_for_cash(cash=1010.0, price_account=10.0, fees=fees)
    # Assert: 10 q * 1.01 = 1010 -> q = 100 (fee EUR 10 > minimum)
    assert q == pytest.approx(100.0)


# --------------------------------------------------------------------------- denials


def test_decide_when_no_price_then_no_price_denial() -> None:
    # Arrange
    stage = _stage()
    # Act
    decision = _one(stage.decide(T0, NOW, [make_opportunity("NVDA")], _portfolio()))
    # Assert
    assert (decision.kind, decision.reason) == (DecisionKind.DENIAL, DenialReason.NO_PRICE)
    assert decision.symbol == "NVDA"


@pytest.mark.parametrize(
    ("mu", "sigma", "risk"),
    [
        (-0.002, 0.02, {}),  # negative edge, shorts not allowed
        (0.0, 0.02, {"allow_short": True}),  # no edge at all
        (0.05, 0.5, {"stop_sigma_k": 2.0}),  # 2 * 0.5 >= 1: stop at or below zero
    ],
)
def test_decide_when_edge_not_tradable_then_non_positive_edge(
    mu: float, sigma: float, risk: dict[str, Any]
) -> None:
    # Arrange
    stage = _stage(**risk)
    # Act
    decision = _one(stage.decide(T0, NOW, [make_opportunity(mu=mu, sigma=sigma)], _portfolio()))
    # Assert
    assert decision.reason is DenialReason.NON_POSITIVE_EDGE


def test_decide_when_position_open_then_already_in_position() -> None:
    # Arrange
    stage = _stage()
    portfolio = _portfolio(open_positions={"AAPL": make_position("AAPL", 1.0)})
    # Act
    decision = _one(stage.decide(T0, NOW, [make_opportunity("AAPL")], portfolio))
    # Assert
    assert decision.reason is DenialReason.ALREADY_IN_POSITION


def test_decide_when_symbol_twice_in_slate_then_second_already_in_position() -> None:
    # Arrange
    stage = _stage()
    # Act
    first, second = stage.decide(
        T0, NOW, [make_opportunity("AAPL"), make_opportunity("AAPL")], _portfolio()
    )
    # Assert
    assert first.kind is DecisionKind.INTENT
    assert second.reason is DenialReason.ALREADY_IN_POSITION


def test_decide_when_slots_used_by_open_and_earlier_approved_then_max_positions() -> None:
    # Arrange
    stage = _stage(max_positions=2)
    portfolio = _portfolio(open_positions={"F": make_position("F", 1.0)})
    slate = [make_opportunity("AAPL"), make_opportunity("MSFT")]
    # Act
    first, second = stage.decide(T0, NOW, slate, portfolio)
    # Assert
    assert first.kind is DecisionKind.INTENT
    assert second.reason is DenialReason.MAX_POSITIONS
    assert second.inputs["approved_before"] == 1


def test_decide_when_size_below_min_order_then_below_min_order() -> None:
    # Arrange: EUR 73 notional (see the hand example) < EUR 100 minimum
    stage = _stage(min_order_notional=100.0)
    # Act
    decision = _one(stage.decide(T0, NOW, [make_opportunity("AAPL")], _portfolio()))
    # Assert
    assert decision.reason is DenialReason.BELOW_MIN_ORDER
    assert decision.inputs["notional_account"] == pytest.approx(73.1706, abs=1e-3)


def test_decide_when_whole_share_too_expensive_for_budget_then_below_min_order() -> None:
    # Arrange: 0.395 AAPL shares fit the budget, which rounds down to 0 whole shares
    stage = _stage(fractional_shares=False)
    # Act
    decision = _one(stage.decide(T0, NOW, [make_opportunity("AAPL")], _portfolio()))
    # Assert
    assert decision.reason is DenialReason.BELOW_MIN_ORDER


def test_decide_when_round_trip_fees_alone_exceed_budget_then_fees_exceed_budget() -> None:
    # Arrange: EUR 150 equity -> EUR 1.50 budget < EUR 2 round-trip fees
    stage = _stage()
    portfolio = _portfolio(equity_value=150.0, peak=150.0, cash_value=150.0)
    # Act
    decision = _one(stage.decide(T0, NOW, [make_opportunity("AAPL")], portfolio))
    # Assert
    assert decision.reason is DenialReason.FEES_EXCEED_BUDGET
    assert decision.inputs["budget"] == pytest.approx(1.5)
    assert decision.inputs["round_trip_fees_min"] == pytest.approx(2.0)


def test_decide_when_cash_almost_gone_then_insufficient_cash() -> None:
    # Arrange: equity in positions, EUR 5 cash: EUR 4 after the entry fee < EUR 10 min order
    stage = _stage()
    portfolio = _portfolio(cash_value=5.0)
    # Act
    decision = _one(stage.decide(T0, NOW, [make_opportunity("AAPL")], portfolio))
    # Assert
    assert decision.reason is DenialReason.INSUFFICIENT_CASH
    assert decision.inputs["binding"] == "cash"


def test_decide_when_earlier_approval_spent_the_cash_then_next_insufficient_cash() -> None:
    # Arrange: EUR 80 cash covers the first entry (EUR 73 + EUR 1 fee), not a second one
    stage = _stage()
    portfolio = _portfolio(cash_value=80.0)
    slate = [make_opportunity("AAPL"), make_opportunity("MSFT")]
    # Act
    first, second = stage.decide(T0, NOW, slate, portfolio)
    # Assert
    assert first.kind is DecisionKind.INTENT
    assert second.reason is DenialReason.INSUFFICIENT_CASH
    assert second.inputs["cash_available"] == pytest.approx(80.0 - 73.1706 - 1.0, abs=1e-3)


def test_decide_when_max_weight_binds_then_notional_capped_at_weight() -> None:
    # Arrange: tiny sigma -> huge budget size; 25 % of EUR 500 = EUR 125 cap
    stage = _stage()
    # Act
    decision = _one(
        stage.decide(T0, NOW, [make_opportunity("AAPL", mu=0.001, sigma=0.001)], _portfolio())
    )
    # Assert
    assert decision.intent is not None
    assert decision.inputs["binding"] == "max_weight"
    notional_eur = decision.intent.notional / EURUSD
    assert notional_eur <= 125.0
    assert notional_eur == pytest.approx(125.0, abs=200.0 / EURUSD * 1e-6)


# --------------------------------------------------------------------------- states


@pytest.mark.parametrize(
    ("equity", "state", "reason"),
    [
        (460.0, TradingState.ACTIVE, None),
        (450.0, TradingState.REDUCING, DenialReason.REDUCING_ONLY),
        (420.0, TradingState.REDUCING, DenialReason.REDUCING_ONLY),
        (400.0, TradingState.HALTED, DenialReason.TRADING_HALTED),
        (0.0, TradingState.HALTED, DenialReason.TRADING_HALTED),
    ],
)
def test_decide_when_drawdown_crosses_thresholds_then_state_and_denial(
    equity: float, state: TradingState, reason: DenialReason | None
) -> None:
    # Arrange: peak 500, reduce at 10 %, halt at 20 %
    stage = _stage(reduce_at_drawdown=0.10, halt_at_drawdown=0.20)
    portfolio = _portfolio(equity_value=equity, peak=500.0, cash_value=max(equity, 1.0))
    # Act
    decision = _one(stage.decide(T0, NOW, [make_opportunity("AAPL")], portfolio))
    # Assert
    assert stage.state is state
    assert decision.reason is reason
    assert decision.inputs["state"] == state.value


def test_decide_when_equity_recovers_then_state_returns_to_active() -> None:
    # Arrange
    stage = _stage()
    stage.decide(T0, NOW, [], _portfolio(equity_value=380.0, peak=500.0))
    halted = stage.state
    # Act
    stage.decide(T0, NOW, [], _portfolio(equity_value=495.0, peak=500.0))
    # Assert
    assert (halted, stage.state) == (TradingState.HALTED, TradingState.ACTIVE)


# --------------------------------------------------------------------------- other decisions


def test_decide_when_slate_empty_then_single_no_trade_decision() -> None:
    # Arrange
    stage = _stage()
    # Act
    decision = _one(stage.decide(T0, NOW, [], _portfolio()))
    # Assert
    assert decision.kind is DecisionKind.NO_TRADE
    assert decision.symbol is None
    assert decision.ts_event == T0
    assert decision.inputs["equity"] == 500.0


def test_decide_when_shorts_allowed_and_mu_negative_then_sell_with_stop_above() -> None:
    # Arrange
    stage = _stage(allow_short=True)
    # Act
    decision = _one(
        stage.decide(T0, NOW, [make_opportunity("AAPL", mu=-0.002, sigma=0.02)], _portfolio())
    )
    # Assert
    intent = decision.intent
    assert intent is not None
    assert intent.side is Side.SELL
    assert intent.stop_price == pytest.approx(208.0)
    assert intent.quantity == 0.395121  # mirror of the long example


def test_decide_when_fixed_fraction_sizing_then_notional_is_fraction_of_equity() -> None:
    # Arrange: 10 % of EUR 500 = EUR 50 = $54
    stage = _stage(sizing="fixed_fraction", fixed_fraction=0.1)
    # Act
    decision = _one(stage.decide(T0, NOW, [make_opportunity("AAPL")], _portfolio()))
    # Assert
    intent = decision.intent
    assert intent is not None
    assert intent.notional == pytest.approx(54.0, abs=200.0 * 1e-6)
    assert intent.notional <= 54.0
    assert intent.stop_price == pytest.approx(192.0)
    assert decision.inputs["binding"] == "fixed_fraction"


def test_decide_when_same_inputs_and_seed_then_identical_decision_log() -> None:
    # Arrange
    slate = [make_opportunity("AAPL"), make_opportunity("MSFT"), make_opportunity("NVDA")]
    # Act
    runs = [
        [d.to_json() for d in _stage(seed=9).decide(T0, NOW, slate, _portfolio())] for _ in range(2)
    ]
    # Assert
    assert runs[0] == runs[1]


# --------------------------------------------------------------------------- exits


def test_exits_when_horizon_elapsed_then_close_intent_opposite_side() -> None:
    # Arrange
    stage = _stage()
    long_pos = make_position("AAPL", 0.5, horizon=Horizon.D1, expires_at=T0)
    short_pos = make_position("MSFT", -2.0, horizon=Horizon.W1, expires_at=T0 - timedelta(1))
    open_pos = make_position("F", 3.0, expires_at=T0 + timedelta(hours=1))
    portfolio = _portfolio(open_positions={"MSFT": short_pos, "F": open_pos, "AAPL": long_pos})
    # Act
    decisions = stage.exits(T0, NOW, portfolio)
    # Assert
    assert [d.symbol for d in decisions] == ["AAPL", "MSFT"]
    sell, buy = (d.intent for d in decisions)
    assert sell is not None
    assert buy is not None
    assert (sell.side, sell.quantity, sell.effect) == (Side.SELL, 0.5, PositionEffect.CLOSE)
    assert (buy.side, buy.quantity, buy.effect) == (Side.BUY, 2.0, PositionEffect.CLOSE)
    assert sell.price_ref == 200.0
    assert sell.expires_at == T0 + CLOSE_ORDER_TTL
    assert all(d.detail == "horizon elapsed" for d in decisions)
    assert decisions[0].inputs["opened_by_intent"] == long_pos.intent_id


def test_exits_when_trading_halted_then_positions_still_closed() -> None:
    # Arrange
    stage = _stage()
    portfolio = _portfolio(
        equity_value=300.0, peak=500.0, open_positions={"AAPL": make_position("AAPL", 1.0)}
    )
    stage.decide(T0, NOW, [], portfolio)
    # Act
    decisions = stage.exits(T0 + timedelta(days=1), NOW, portfolio)
    # Assert
    assert stage.state is TradingState.HALTED
    assert [d.kind for d in decisions] == [DecisionKind.INTENT]


def test_exits_when_no_last_price_then_average_price_used_as_reference() -> None:
    # Arrange
    stage = _stage()
    pos = make_position("NVDA", 1.0, avg_price=900.0, expires_at=T0)
    # Act
    (decision,) = stage.exits(T0, NOW, _portfolio(open_positions={"NVDA": pos}))
    # Assert
    assert decision.intent is not None
    assert decision.intent.price_ref == 900.0
    assert decision.inputs["price_source"] == "avg_price"


# --------------------------------------------------------------------------- the invariant


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[RiskStage, StubPortfolio, list[Opportunity]]:
    rate = draw(st.floats(0.5, 2.0))
    fees = FeeModel(
        fixed=draw(st.floats(0.0, 5.0)),
        bps=draw(st.floats(0.0, 50.0)),
        minimum=draw(st.floats(0.0, 5.0)),
    )
    cfg = RiskConfig(
        risk_per_trade=draw(st.floats(0.001, 0.1)),
        max_weight=draw(st.floats(0.01, 1.0)),
        max_positions=draw(st.integers(1, 6)),
        stop_sigma_k=draw(st.floats(0.5, 4.0)),
        min_order_notional=draw(st.floats(0.0, 50.0)),
        fractional_shares=draw(st.booleans()),
        allow_short=draw(st.booleans()),
        sizing=draw(st.sampled_from(["risk_budget", "risk_budget", "fixed_fraction"])),
    )
    stage = RiskStage(
        config=cfg,
        fees=fees,
        fx=FxConverter(account_currency="EUR", rates={"USD": rate}),
        slippage_bps=draw(st.floats(0.0, 30.0)),
        ids=IdGenerator(0),
        config_hash=HASH,
        model_version="risk-v0",
    )
    equity = draw(st.floats(50.0, 1e6))
    symbols = [f"S{i}" for i in range(draw(st.integers(1, 6)))]
    portfolio = StubPortfolio(
        cash_value=draw(st.floats(0.0, 1.0)) * equity,
        equity_value=equity,
        peak=equity,
        prices={s: draw(st.floats(0.5, 5000.0)) for s in symbols},
    )
    slate = [
        make_opportunity(s, mu=draw(st.floats(-0.05, 0.05)), sigma=draw(st.floats(1e-4, 0.3)))
        for s in symbols
    ]
    return stage, portfolio, slate


@settings(max_examples=500, deadline=None)
@given(_scenarios())
def test_decide_when_random_inputs_then_every_intent_within_budget_weight_and_cash(
    scenario: tuple[RiskStage, StubPortfolio, list[Opportunity]],
) -> None:
    # Arrange
    stage, portfolio, slate = scenario
    equity, cash = portfolio.equity(), portfolio.cash
    risk_budget = stage.config.risk_per_trade * equity
    # Act
    decisions = stage.decide(T0, NOW, slate, portfolio)
    # Assert
    assert len(decisions) == len(slate)
    spent = 0.0
    for d in decisions:
        assert (d.kind is DecisionKind.INTENT) == (d.intent is not None)
        if d.intent is None:
            continue
        i = d.intent
        assert i.stop_price is not None
        to_eur = stage.fx.to_account
        notional = to_eur(i.notional, "USD")
        fee = stage.fees.fee(notional)
        if stage.config.sizing == "risk_budget":
            loss = abs(i.price_ref - i.stop_price) * i.quantity
            assert to_eur(loss, "USD") + 2 * fee <= risk_budget + 1e-9
            assert i.risk_budget <= risk_budget + 1e-9
        assert notional <= stage.config.max_weight * equity + 1e-9
        assert notional + fee <= cash - spent + 1e-9
        assert notional >= stage.config.min_order_notional
        if not stage.config.fractional_shares:
            assert i.quantity == math.floor(i.quantity)
        spent += notional + fee
    event(f"intents: {min(sum(d.intent is not None for d in decisions), 2)}")


def test_decide_when_drawdown_older_than_window_then_reducing_cools_off_to_active() -> None:
    # Arrange: window of 3 steps; equity falls 12 % (REDUCING), then stays flat
    stage = _stage(reduce_at_drawdown=0.10, halt_at_drawdown=0.20, drawdown_window=3)
    states = []
    # Act
    for equity in (500.0, 500.0, 500.0, 440.0, 440.0, 440.0, 440.0):
        stage.decide(T0, NOW, [], _portfolio(equity_value=equity, peak=500.0))
        states.append(stage.state)
    # Assert: reducing while the 500 peak is inside the window, active once it rolled out
    assert states == [
        TradingState.ACTIVE,
        TradingState.ACTIVE,
        TradingState.ACTIVE,
        TradingState.REDUCING,
        TradingState.REDUCING,
        TradingState.ACTIVE,
        TradingState.ACTIVE,
    ]


def test_decide_when_all_time_drawdown_reaches_halt_then_halted_whatever_the_window() -> None:
    # Arrange
    stage = _stage(reduce_at_drawdown=0.10, halt_at_drawdown=0.20, drawdown_window=2)
    # Act
    for _ in range(5):
        stage.decide(T0, NOW, [], _portfolio(equity_value=390.0, peak=500.0))
    # Assert
    assert stage.state is TradingState.HALTED


def test_decide_when_expected_gain_below_round_trip_costs_then_non_positive_edge() -> None:
    # Arrange: EUR 500 account, AAPL at 200 USD, mu 0.1 % over the horizon. The budget buys
    # about EUR 73 of AAPL: expected gain ~EUR 0.07 against EUR 2 of fees plus slippage.
    stage = _stage(min_edge_over_costs=1.0)
    opp = make_opportunity("AAPL", mu=0.001, sigma=0.02)
    # Act
    decision = _one(stage.decide(T0, NOW, [opp], _portfolio()))
    # Assert
    assert decision.kind is DecisionKind.DENIAL
    assert decision.reason is DenialReason.NON_POSITIVE_EDGE
    assert "below 1x the round-trip costs" in decision.detail
    gain, costs = decision.inputs["expected_gain"], decision.inputs["round_trip_costs"]
    assert isinstance(gain, float)
    assert isinstance(costs, float)
    assert gain < costs
    assert costs >= 2.0  # two minimum fees at least


def test_decide_when_expected_gain_covers_costs_then_intent() -> None:
    # Arrange: the same trade with mu 5 % (expected gain ~EUR 3.7 > ~EUR 2.1 of costs)
    stage = _stage(min_edge_over_costs=1.0)
    opp = make_opportunity("AAPL", mu=0.05, sigma=0.02)
    # Act
    decision = _one(stage.decide(T0, NOW, [opp], _portfolio()))
    # Assert
    assert decision.kind is DecisionKind.INTENT
    gain, costs = decision.inputs["expected_gain"], decision.inputs["round_trip_costs"]
    assert isinstance(gain, float)
    assert isinstance(costs, float)
    assert gain >= costs


def test_decide_when_edge_rule_disabled_then_small_edge_still_sized() -> None:
    # Arrange
    stage = _stage(min_edge_over_costs=0.0)
    opp = make_opportunity("AAPL", mu=0.001, sigma=0.02)
    # Act
    decision = _one(stage.decide(T0, NOW, [opp], _portfolio()))
    # Assert
    assert decision.kind is DecisionKind.INTENT
