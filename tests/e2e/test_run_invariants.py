"""Accounting and risk invariants, checked on every row of a real replay's journal."""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict
from datetime import date

import pytest

from contracts import DecisionLog, PositionEffect
from engine.execution.costs import costs_from_config

from .conftest import RunResult, default_config, replay

START, END = date(2005, 1, 1), date(2007, 12, 31)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    run_dir = tmp_path_factory.mktemp("invariants") / "run"
    result = asyncio.run(replay(default_config(seed=5), run_dir, START, END))
    assert result.completed
    return result


def _intent_decisions(run: RunResult) -> list[DecisionLog]:
    rows = run.rows("SELECT json FROM decisions WHERE kind = 'intent' ORDER BY rowid")
    return [DecisionLog.model_validate_json(r["json"]) for r in rows]


def test_snapshots_when_any_step_then_cash_plus_positions_equals_equity(run: RunResult) -> None:
    # Arrange
    rows = run.rows("SELECT ts, cash, positions_value, equity FROM snapshots ORDER BY rowid")
    # Act / Assert
    assert len(rows) > 500
    for r in rows:
        assert math.isclose(r["cash"] + r["positions_value"], r["equity"], rel_tol=1e-9), r["ts"]


def test_intents_when_opening_then_loss_at_stop_plus_fees_within_one_percent_of_equity(
    run: RunResult,
) -> None:
    # Arrange: equity at decision time = the snapshot of the same step (orders fill next bar)
    cfg = default_config()
    fees, fx = costs_from_config(cfg.execution, "USD")
    equity_at = {r["ts"]: r["equity"] for r in run.rows("SELECT ts, equity FROM snapshots")}
    opened = [
        d for d in _intent_decisions(run) if d.intent and d.intent.effect is PositionEffect.OPEN
    ]
    # Act / Assert
    assert opened, "the run must open positions for the invariant to mean anything"
    for decision in opened:
        intent = decision.intent
        assert intent is not None
        assert intent.stop_price is not None
        notional = fx.to_account(intent.quantity * intent.price_ref, "USD")
        loss = fx.to_account(abs(intent.price_ref - intent.stop_price) * intent.quantity, "USD")
        round_trip_fees = 2 * fees.fee(notional)
        equity = equity_at[decision.ts_event.isoformat()]
        assert loss + round_trip_fees <= cfg.risk.risk_per_trade * equity + 1e-9, decision
        assert notional <= cfg.risk.max_weight * equity + 1e-9, decision


def test_fills_when_any_then_each_traces_to_an_order_and_an_intent(run: RunResult) -> None:
    # Arrange
    intents = {d.intent.intent_id for d in _intent_decisions(run) if d.intent is not None}
    order_intent = {
        r["order_id"]: r["intent_id"] for r in run.rows("SELECT order_id, intent_id FROM orders")
    }
    fills = run.rows("SELECT fill_id, order_id FROM fills")
    # Act / Assert
    assert fills
    for fill in fills:
        assert fill["order_id"] in order_intent, f"fill {fill['fill_id']} has no order"
        assert order_intent[fill["order_id"]] in intents, f"fill {fill['fill_id']} has no intent"


def test_positions_when_run_ends_then_each_is_the_sum_of_its_fills(run: RunResult) -> None:
    # Arrange
    net: dict[str, float] = defaultdict(float)
    for r in run.rows("SELECT symbol, side, quantity FROM fills ORDER BY rowid"):
        net[r["symbol"]] += r["quantity"] if r["side"] == "buy" else -r["quantity"]
    portfolio = run.engine.portfolio
    assert portfolio is not None
    # Act
    held = {s: p.quantity for s, p in portfolio.positions.items()}
    # Assert: no position without fills, and fills add up to every position
    for symbol, quantity in held.items():
        assert math.isclose(net[symbol], quantity, rel_tol=1e-9, abs_tol=1e-9), symbol
    for symbol, quantity in net.items():
        if symbol not in held:
            assert abs(quantity) < 1e-9, symbol


def test_fees_when_summed_then_equal_fees_paid_and_reduce_equity(run: RunResult) -> None:
    # Arrange
    fees = sum(r["fee"] for r in run.rows("SELECT fee FROM fills"))
    last = run.rows(
        "SELECT fees_paid, equity, realized_pnl, unrealized_pnl FROM snapshots "
        "ORDER BY rowid DESC LIMIT 1"
    )[0]
    initial = default_config().execution.initial_cash
    # Act / Assert
    assert fees > 0
    assert math.isclose(last["fees_paid"], fees, rel_tol=1e-9)
    expected = initial + last["realized_pnl"] + last["unrealized_pnl"] - last["fees_paid"]
    assert math.isclose(last["equity"], expected, rel_tol=1e-9)


def test_decisions_when_written_then_carry_config_hash_and_model_version(run: RunResult) -> None:
    # Arrange
    cfg_hash = run.engine.config_hash
    rows = run.rows("SELECT json FROM decisions")
    # Act
    parsed = [json.loads(r["json"]) for r in rows]
    # Assert
    assert parsed
    assert {p["config_hash"] for p in parsed} == {cfg_hash}
    assert all(p["model_version"] for p in parsed)
