"""Risk: a selected slate plus the portfolio become sized intents or denials, all logged.

`RiskStage.decide` is a function of its inputs (plus ids drawn from the injected generator):
it reads the account through the read-only `PortfolioView` and returns one `DecisionLog` per
opportunity, in slate order (the selector's order is the priority when cash or position slots
run out), or a single NO_TRADE decision for an empty slate. `exits` closes positions whose
horizon has elapsed.

Sizing (`risk_budget`, long; shorts mirror it with the stop above the price):

    P        reference price (instrument ccy) = portfolio.last_price(symbol)
    stop     P * (1 - k * sigma)               k = stop_sigma_k, sigma over the opportunity horizon
    L        per-share loss at the stop, account ccy, incl. slippage on entry and exit
             = fx(P - stop) + fx(2 * slippage_bps * 1e-4 * P)
    fee(n)   = max(minimum, fixed + bps * n)   one order, n = notional in account ccy
    budget B = risk_per_trade * equity

    largest q with  q * L + 2 * fee(q * p) <= B,  p = fx(P)

Because ``2 * fee(q p) + q L = max(q L + 2 minimum, q (L + 2 bps p) + 2 fixed)``, the
constraint holds iff both affine branches hold, so the exact solution is

    q* = min((B - 2 minimum) / L, (B - 2 fixed) / (L + 2 bps p))

(the two-branch solution of the piecewise fee, without case analysis; tested against brute
force). Then q is capped by max_weight (q p <= max_weight * equity) and by cash
(q p + fee(q p) <= cash, solved the same way), and rounded down (whole shares, or 6 decimals
with `fractional_shares`). The round-trip fee is charged at the entry notional for both legs,
which over-estimates the exit fee of a losing long and so errs on the safe side.

An entry must also be worth its costs: its expected gain |mu| * notional must reach
`min_edge_over_costs` times the round-trip fees and slippage, else NON_POSITIVE_EDGE. On a
small account the minimum fee makes this the binding rule, which is the honest outcome.

Cash and position slots are consumed by the intents approved earlier in the same call, so a
slate can never spend the same euro twice. `min_order_notional` is compared with the notional
in the account currency (it exists because fees, charged in that currency, would dominate).

Trading states: HALTED (nothing new: TRADING_HALTED) when the drawdown from the all-time peak
equity reaches `halt_at_drawdown` — the kill switch; REDUCING (no new entries: REDUCING_ONLY)
when the drawdown from the peak of the last `drawdown_window` steps reaches
`reduce_at_drawdown`; ACTIVE otherwise. The REDUCING peak is a trailing one because a state
that forbids entries would otherwise last forever (no entries, no recovery): after a window of
sitting out, the account resumes at its current size. Exits are never blocked: closing reduces
risk. The state is re-derived on each call, one call per step.

Not in v0: the CVaR limits (`max_position_cvar`, `max_portfolio_cvar`) are not enforced yet;
`cvar_contribution` is reported on each intent so they can be.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from config.models import RiskConfig
from contracts import (
    DecisionKind,
    DecisionLog,
    DenialReason,
    IdGenerator,
    Intent,
    Opportunity,
    PositionEffect,
    Side,
)
from contracts.base import JsonScalar
from engine.execution.costs import FeeModel, FxConverter
from engine.execution.model import PortfolioView, Position
from engine.features.store import Row
from engine.regime import MARKET_ENTITY

__all__ = [
    "CLOSE_ORDER_TTL",
    "FRACTIONAL_DECIMALS",
    "RiskStage",
    "SizingResult",
    "TradingState",
    "drawdown",
    "max_quantity_for_budget",
    "max_quantity_for_cash",
    "trading_state",
]

FRACTIONAL_DECIMALS = 6
CLOSE_ORDER_TTL = timedelta(days=5)
"""Validity of a close order: long enough to reach the next bar across a weekend or a
holiday closure (a one-day validity expired every Friday close before Monday's bar). `exits`
is stateless and re-issues the close every step while the position is still open; a close that
finds the position already flat is canceled by the venue."""


class TradingState(StrEnum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


def drawdown(equity: float, peak: float) -> float:
    """1 - equity / peak in [0, 1]; an account with no positive peak has no drawdown unless
    its equity is not positive either."""
    if peak <= 0.0:
        return 0.0 if equity > 0.0 else 1.0
    return min(max(1.0 - equity / peak, 0.0), 1.0)


_THRESHOLD_TOLERANCE = 1e-12
"""1 - 450/500 is 0.09999999999999998 in floating point; a 10 % drawdown must count as 10 %."""


def trading_state(dd: float, recent_dd: float, config: RiskConfig) -> TradingState:
    """ACTIVE / REDUCING / HALTED (thresholds inclusive): HALTED from the all-time drawdown
    `dd`, REDUCING from the drawdown `recent_dd` against the trailing-window peak."""
    if dd >= config.halt_at_drawdown - _THRESHOLD_TOLERANCE:
        return TradingState.HALTED
    if recent_dd >= config.reduce_at_drawdown - _THRESHOLD_TOLERANCE:
        return TradingState.REDUCING
    return TradingState.ACTIVE


class _TrailingMax:
    """Maximum of the last `window` values pushed (all values when window is 0), O(1)."""

    def __init__(self, window: int) -> None:
        self._window = window
        self._count = 0
        self._best = -math.inf
        self._candidates: deque[tuple[int, float]] = deque()

    @property
    def full(self) -> bool:
        """True once `window` values were pushed (always True for window 0: all-time)."""
        return self._window <= 0 or self._count >= self._window

    def push(self, value: float) -> float:
        index = self._count
        self._count += 1
        if self._window <= 0:
            self._best = max(self._best, value)
            return self._best
        candidates = self._candidates
        while candidates and candidates[-1][1] <= value:
            candidates.pop()
        candidates.append((index, value))
        while candidates[0][0] <= index - self._window:
            candidates.popleft()
        return candidates[0][1]


def max_quantity_for_budget(
    budget: float, loss_per_share: float, price_account: float, fees: FeeModel
) -> float:
    """Largest q >= 0 with q * loss_per_share + 2 * fees.fee(q * price_account) <= budget.

    Exact for the piecewise fee max(minimum, fixed + bps * n): returns <= 0 when the fees of a
    round trip alone use up the budget.
    """
    bps = fees.bps * 1e-4
    by_minimum = (budget - 2.0 * fees.minimum) / loss_per_share
    by_linear = (budget - 2.0 * fees.fixed) / (loss_per_share + 2.0 * bps * price_account)
    return min(by_minimum, by_linear)


def max_quantity_for_cash(cash: float, price_account: float, fees: FeeModel) -> float:
    """Largest q >= 0 with q * price_account + fees.fee(q * price_account) <= cash."""
    bps = fees.bps * 1e-4
    by_minimum = (cash - fees.minimum) / price_account
    by_linear = (cash - fees.fixed) / (price_account * (1.0 + bps))
    return min(by_minimum, by_linear)


@dataclass(frozen=True, slots=True)
class SizingResult:
    """Outcome of sizing one entry: a quantity, or the reason there is none."""

    quantity: float
    reason: DenialReason | None
    detail: str
    inputs: dict[str, JsonScalar]
    stop: float = 0.0
    loss_per_share: float = 0.0
    """Account-ccy loss per share at the stop, slippage on both legs included."""


def _num(value: float) -> JsonScalar:
    """A float for DecisionLog.inputs (which rejects NaN/inf): non-finite becomes its text."""
    return value if math.isfinite(value) else str(value)


class RiskStage:
    """Sizes entries, denies what breaks a rule, closes expired positions; logs every decision."""

    def __init__(
        self,
        *,
        config: RiskConfig,
        fees: FeeModel,
        fx: FxConverter,
        slippage_bps: float,
        ids: IdGenerator,
        config_hash: str,
        model_version: str,
        instrument_currency: str = "USD",
    ) -> None:
        if not (math.isfinite(slippage_bps) and slippage_bps >= 0.0):
            raise ValueError(f"slippage_bps must be >= 0, got {slippage_bps}")
        # Fail at construction, not on the first trade, if the FX rate is missing.
        fx.to_account(1.0, instrument_currency)
        self.config = config
        self.fees = fees
        self.fx = fx
        self.slippage_bps = slippage_bps
        self.instrument_currency = instrument_currency
        self._ids = ids
        self._config_hash = config_hash
        self._model_version = model_version
        self._state = TradingState.ACTIVE
        self._recent_peak = _TrailingMax(config.drawdown_window)
        self._lot = 10.0**-FRACTIONAL_DECIMALS if config.fractional_shares else 1.0

    @property
    def state(self) -> TradingState:
        """The trading state derived at the last `decide` call (ACTIVE before the first)."""
        return self._state

    # ---- entries

    def decide(
        self,
        step: datetime,
        now: datetime,
        selected: Sequence[Opportunity],
        portfolio: PortfolioView,
        market: Mapping[str, Row] | None = None,
    ) -> list[DecisionLog]:
        """Decide on each selected opportunity. `market`: the step's market features read from
        the feature store (realised volatility is recorded as a decision input, for audit)."""
        equity = float(portfolio.equity())
        peak = max(float(portfolio.peak_equity), equity)
        cash = float(portfolio.cash)
        dd = drawdown(equity, peak)
        recent_peak = self._recent_peak.push(equity)
        if not self._recent_peak.full:
            # Until a whole window has been seen, the trailing peak is the all-time one (the
            # stage cannot know equity values from before it started).
            recent_peak = peak
        recent_dd = drawdown(equity, recent_peak)
        self._state = state = trading_state(dd, recent_dd, self.config)
        account: dict[str, JsonScalar] = {
            "equity": _num(equity),
            "peak_equity": _num(peak),
            "drawdown": _num(dd),
            "recent_peak_equity": _num(recent_peak),
            "recent_drawdown": _num(recent_dd),
            "state": state.value,
            "cash": _num(cash),
            "open_positions": len(portfolio.positions),
        }
        if not selected:
            return [
                self._log(
                    DecisionKind.NO_TRADE,
                    step=step,
                    now=now,
                    trace_id=self._ids.trace_id(),
                    symbol=None,
                    detail="empty slate",
                    inputs=account,
                )
            ]
        decisions: list[DecisionLog] = []
        cash_left = cash
        held = set(portfolio.positions)
        approved = 0
        for opp in selected:
            inputs: dict[str, JsonScalar] = {
                **account,
                "mu": opp.mu,
                "sigma": opp.sigma,
                "horizon": opp.horizon.value,
                "cash_available": _num(cash_left),
                "approved_before": approved,
            }
            if market is not None:
                row = market.get(opp.symbol, {})
                vol = row.get("vol_20d")
                inputs["realized_vol_20d"] = (
                    _num(float(vol.value))
                    if vol is not None and isinstance(vol.value, float) and vol.value == vol.value
                    else None
                )
                regime = row.get("regime")
                if regime is not None:
                    # the shared regime model's labels (engine.regime): recorded, not sized on
                    inputs["regime"] = str(regime.value)
                    market_regime = market.get(MARKET_ENTITY, {}).get("regime")
                    inputs["market_regime"] = (
                        str(market_regime.value) if market_regime is not None else None
                    )
            reason, detail = self._gate(opp, state, held, approved, portfolio)
            if reason is not None:
                decisions.append(self._deny(opp, reason, detail, inputs, step=step, now=now))
                continue
            last = portfolio.last_price(opp.symbol)
            assert last is not None  # checked by _gate
            price = float(last)
            sizing = self._size(opp, price, equity, cash_left)
            inputs.update(sizing.inputs)
            if sizing.reason is not None:
                decisions.append(
                    self._deny(opp, sizing.reason, sizing.detail, inputs, step=step, now=now)
                )
                continue
            intent = self._entry_intent(opp, price, sizing, step=step, now=now)
            notional_account, fee, _ = self._exposure(intent.quantity, price, sizing.loss_per_share)
            cash_left -= notional_account + fee
            held.add(opp.symbol)
            approved += 1
            decisions.append(
                self._log(
                    DecisionKind.INTENT,
                    step=step,
                    now=now,
                    trace_id=opp.trace_id,
                    symbol=opp.symbol,
                    intent=intent,
                    detail=sizing.detail,
                    inputs=inputs,
                )
            )
        return decisions

    def _gate(
        self,
        opp: Opportunity,
        state: TradingState,
        held: set[str],
        approved: int,
        portfolio: PortfolioView,
    ) -> tuple[DenialReason | None, str]:
        """The checks that need no sizing, most fundamental first."""
        cfg = self.config
        if state is TradingState.HALTED:
            return DenialReason.TRADING_HALTED, "drawdown at or beyond halt_at_drawdown"
        if state is TradingState.REDUCING:
            return DenialReason.REDUCING_ONLY, "drawdown at or beyond reduce_at_drawdown"
        if opp.symbol in held:
            return DenialReason.ALREADY_IN_POSITION, "a position in this symbol is open or approved"
        if len(portfolio.positions) + approved >= cfg.max_positions:
            return DenialReason.MAX_POSITIONS, f"max_positions = {cfg.max_positions} reached"
        price = portfolio.last_price(opp.symbol)
        if price is None or not (math.isfinite(price) and price > 0.0):
            return DenialReason.NO_PRICE, "no usable last price for this symbol"
        if opp.mu == 0.0:
            return DenialReason.NON_POSITIVE_EDGE, "mu = 0"
        if opp.mu < 0.0 and not cfg.allow_short:
            return DenialReason.NON_POSITIVE_EDGE, "mu < 0 and shorts are not allowed"
        if opp.mu > 0.0 and cfg.stop_sigma_k * opp.sigma >= 1.0:
            return DenialReason.NON_POSITIVE_EDGE, "stop_sigma_k * sigma >= 1 puts the stop at <= 0"
        return None, ""

    def _size(self, opp: Opportunity, price: float, equity: float, cash: float) -> SizingResult:
        cfg = self.config
        ccy = self.instrument_currency
        long = opp.mu > 0.0
        k_sigma = cfg.stop_sigma_k * opp.sigma
        stop = price * (1.0 - k_sigma) if long else price * (1.0 + k_sigma)
        price_account = self.fx.to_account(price, ccy)
        slippage = 2.0 * self.slippage_bps * 1e-4 * price
        loss_per_share = self.fx.to_account(abs(price - stop) + slippage, ccy)
        budget = cfg.risk_per_trade * equity
        min_fees = 2.0 * self.fees.fee(0.0)
        inputs: dict[str, JsonScalar] = {
            "sizing": cfg.sizing,
            "side": (Side.BUY if long else Side.SELL).value,
            "price": price,
            "price_account": _num(price_account),
            "stop": _num(stop),
            "stop_sigma_k": cfg.stop_sigma_k,
            "slippage_bps": self.slippage_bps,
            "loss_per_share": _num(loss_per_share),
            "budget": _num(budget),
            "round_trip_fees_min": _num(min_fees),
        }
        if cfg.sizing == "risk_budget":
            if min_fees >= budget:
                return SizingResult(
                    0.0,
                    DenialReason.FEES_EXCEED_BUDGET,
                    "round-trip fees alone use up the risk budget",
                    inputs,
                )
            q_target = max_quantity_for_budget(budget, loss_per_share, price_account, self.fees)
            inputs["qty_budget"] = _num(q_target)
        else:
            q_target = cfg.fixed_fraction * equity / price_account
            inputs["qty_fixed_fraction"] = _num(q_target)
        q_weight = cfg.max_weight * equity / price_account
        q_cash = max_quantity_for_cash(cash, price_account, self.fees)
        inputs["qty_max_weight"] = _num(q_weight)
        inputs["qty_cash"] = _num(q_cash)
        q_raw = min(q_target, q_weight, q_cash)
        binding = (
            "cash"
            if q_cash <= min(q_target, q_weight)
            else ("max_weight" if q_weight < q_target else cfg.sizing)
        )
        inputs["binding"] = binding
        q = self._round_down(q_raw)
        q = self._enforce(q, price, loss_per_share, budget, equity, cash)
        notional_account, fee, loss_at_stop = self._exposure(q, price, loss_per_share)
        inputs["qty"] = q
        inputs["notional_account"] = _num(notional_account)
        inputs["fee_entry"] = _num(fee)
        inputs["fees_round_trip"] = _num(2.0 * fee)
        inputs["loss_at_stop"] = _num(loss_at_stop)
        if q <= 0.0 or notional_account < cfg.min_order_notional:
            if binding == "cash":
                return SizingResult(
                    0.0,
                    DenialReason.INSUFFICIENT_CASH,
                    "cash (after fees and earlier approvals) allows no order of the minimum size",
                    inputs,
                )
            return SizingResult(
                0.0,
                DenialReason.BELOW_MIN_ORDER,
                f"notional {notional_account:.2f} below min_order_notional "
                f"{cfg.min_order_notional:.2f} (account ccy)",
                inputs,
            )
        expected_gain = abs(opp.mu) * notional_account
        costs = 2.0 * fee + self.fx.to_account(slippage * q, ccy)
        inputs["expected_gain"] = _num(expected_gain)
        inputs["round_trip_costs"] = _num(costs)
        if cfg.min_edge_over_costs > 0.0 and expected_gain < cfg.min_edge_over_costs * costs:
            return SizingResult(
                0.0,
                DenialReason.NON_POSITIVE_EDGE,
                f"expected gain {expected_gain:.2f} below {cfg.min_edge_over_costs:g}x the "
                f"round-trip costs {costs:.2f} (account ccy)",
                inputs,
            )
        return SizingResult(
            q, None, f"sized by {binding}", inputs, stop=stop, loss_per_share=loss_per_share
        )

    def _round_down(self, q: float) -> float:
        if not q > 0.0:
            return 0.0
        if self._lot == 1.0:
            return float(math.floor(q))
        scale = 10.0**FRACTIONAL_DECIMALS
        rounded = math.floor(q * scale) / scale
        if rounded > q:  # q * scale rounded up to an integer in floating point
            rounded = (math.floor(q * scale) - 1) / scale
        return max(rounded, 0.0)

    def _exposure(
        self, q: float, price: float, loss_per_share: float
    ) -> tuple[float, float, float]:
        """(notional, entry fee, loss at the stop incl. round-trip fees), account ccy.

        The one place these are computed, so sizing checks exactly what the intent reports.
        """
        notional = self.fx.to_account(q * price, self.instrument_currency)
        fee = self.fees.fee(notional)
        return notional, fee, q * loss_per_share + 2.0 * fee

    def _enforce(
        self,
        q: float,
        price: float,
        loss_per_share: float,
        budget: float,
        equity: float,
        cash: float,
    ) -> float:
        """Step down by one lot while floating-point error leaves a limit exceeded."""
        cfg = self.config
        check_budget = cfg.sizing == "risk_budget"
        for _ in range(8):
            if q <= 0.0:
                return 0.0
            notional, fee, loss = self._exposure(q, price, loss_per_share)
            ok = (
                notional <= cfg.max_weight * equity
                and notional + fee <= cash
                and (not check_budget or loss <= budget)
            )
            if ok:
                return q
            q = self._round_down(q - self._lot)
        return 0.0  # pragma: no cover - a handful of lots always suffices

    def _entry_intent(
        self, opp: Opportunity, price: float, sizing: SizingResult, *, step: datetime, now: datetime
    ) -> Intent:
        q = sizing.quantity
        long = opp.mu > 0.0
        notional_account, _, risk_budget = self._exposure(q, price, sizing.loss_per_share)
        cvar = opp.cvar if opp.cvar is not None else 0.0
        return Intent(
            trace_id=opp.trace_id,
            ts_event=step,
            ts_init=now,
            intent_id=self._ids.message_id(),
            symbol=opp.symbol,
            side=Side.BUY if long else Side.SELL,
            effect=PositionEffect.OPEN,
            quantity=q,
            price_ref=price,
            notional=q * price,
            currency=self.instrument_currency,
            stop_price=sizing.stop,
            horizon=opp.horizon,
            risk_budget=risk_budget,
            cvar_contribution=notional_account * cvar,
            expires_at=step + opp.horizon.timedelta,
        )

    # ---- exits

    def exits(self, step: datetime, now: datetime, portfolio: PortfolioView) -> list[DecisionLog]:
        """A CLOSE intent for every position whose horizon has elapsed (expires_at <= step)."""
        out: list[DecisionLog] = []
        positions = portfolio.positions
        for symbol in sorted(positions):
            pos = positions[symbol]
            if pos.expires_at > step or pos.quantity == 0.0:
                continue
            out.append(self._close(pos, step, now, portfolio))
        return out

    def _close(
        self, pos: Position, step: datetime, now: datetime, portfolio: PortfolioView
    ) -> DecisionLog:
        last = portfolio.last_price(pos.symbol)
        usable = last is not None and math.isfinite(last) and last > 0.0
        price = float(last) if usable and last is not None else float(pos.avg_price)
        qty = float(abs(pos.quantity))
        trace_id = self._ids.trace_id()
        intent = Intent(
            trace_id=trace_id,
            ts_event=step,
            ts_init=now,
            intent_id=self._ids.message_id(),
            symbol=pos.symbol,
            side=Side.SELL if pos.quantity > 0 else Side.BUY,
            effect=PositionEffect.CLOSE,
            quantity=qty,
            price_ref=price,
            notional=qty * price,
            currency=pos.currency,
            horizon=pos.horizon,
            risk_budget=0.0,
            expires_at=step + CLOSE_ORDER_TTL,
        )
        inputs: dict[str, JsonScalar] = {
            "position_quantity": float(pos.quantity),
            "avg_price": float(pos.avg_price),
            "price": price,
            "price_source": "last" if usable else "avg_price",
            "expires_at": pos.expires_at.isoformat(),
            "opened_at": pos.opened_at.isoformat(),
            "opened_by_intent": pos.intent_id,
            "state": self._state.value,
        }
        return self._log(
            DecisionKind.INTENT,
            step=step,
            now=now,
            trace_id=trace_id,
            symbol=pos.symbol,
            intent=intent,
            detail="horizon elapsed",
            inputs=inputs,
        )

    # ---- logs

    def _deny(
        self,
        opp: Opportunity,
        reason: DenialReason,
        detail: str,
        inputs: dict[str, JsonScalar],
        *,
        step: datetime,
        now: datetime,
    ) -> DecisionLog:
        return self._log(
            DecisionKind.DENIAL,
            step=step,
            now=now,
            trace_id=opp.trace_id,
            symbol=opp.symbol,
            reason=reason,
            detail=detail,
            inputs=inputs,
        )

    def _log(
        self,
        kind: DecisionKind,
        *,
        step: datetime,
        now: datetime,
        trace_id: str,
        symbol: str | None,
        reason: DenialReason | None = None,
        intent: Intent | None = None,
        detail: str = "",
        inputs: dict[str, JsonScalar],
    ) -> DecisionLog:
        return DecisionLog(
            trace_id=trace_id,
            ts_event=step,
            ts_init=now,
            decision_id=self._ids.message_id(),
            kind=kind,
            symbol=symbol,
            reason=reason,
            detail=detail,
            intent=intent,
            inputs=inputs,
            model_version=self._model_version,
            config_hash=self._config_hash,
        )
