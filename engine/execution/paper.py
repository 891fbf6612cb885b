"""The paper venue: market orders filled at the next bar, protective stops, costs, cash checks.

Why this module exists: a replay and a paper account need a venue that fills the risk stage's
intents the way a broker would, with the same fee formula the risk stage sized with
(`FeeModel`), adverse slippage, and protective stops, deterministically (ids from the seeded
`IdGenerator`, times from the bars and the injected clock; no wall clock, no randomness).

Lifecycle of one step (the pipeline's order): ``on_bars(bars_of_t)`` fills what was submitted
before ``t`` and triggers resting stops; the risk stage then decides and calls ``submit``; those
orders wait for the symbol's *next* bar (a bar with a later ``ts_event``), so nothing fills on
the bar it was decided on (no look-ahead).

Fill rules
- Market orders fill at the bar's open, or at its close when the bar has no open (close-only
  data), moved against the trader by ``slippage_bps`` (buys pay more, sells receive less).
  The fee is ``FeeModel.fee(notional in the account currency)``, charged in the account currency.
- An order whose intent's ``expires_at`` has passed (``bar.ts_event > expires_at``) before its
  fill is ``EXPIRED``; an order whose symbol gets no bar keeps waiting until then.
- An entry (``effect=open``) that carries ``stop_price`` places one resting protective STOP order
  for the whole position, with the entry's ``intent_id`` and ``trace_id``, so every fill (stop
  fills included) traces back to an intent. One stop per symbol: a later entry with a stop
  replaces it; a change in position size (an add, a partial close) replaces it with one of the
  new size (the old one is reported ``CANCELED``, the new one ``ACCEPTED``).
- A close (``effect=close``) reduces or flattens the position, never flips it (quantity is
  capped at the position); when it fills, the resting stop is canceled (flat) or resized
  (partial). The stop is cancelled at the close's *fill*, not at submit, so a close that expires
  or cannot fill never leaves the position unprotected. A close whose position is already flat
  (e.g. stopped out first) is ``CANCELED``.
- Stops trigger when the bar trades through them. With an open beyond the stop (a gap) the fill
  is at the open; else, with a known low (long) / high (short), at the stop price; else (close-only
  bars) at the close: **with end-of-day closes a stop can only be observed at the close, so the
  realised loss can exceed the planned stop distance.** A triggered stop is a market order, so
  slippage applies. A stop placed by an entry filled at this bar's open is checked against the
  rest of that bar.

Cash (decision: fill what cash allows, within limits)
- A long entry must leave enough cash to pay the exit fees of every long position including
  itself (estimated at current value), so a long-only account can always close its positions.
  When the price moved and the order no longer fits, it is filled for the quantity cash allows
  (the order is reported ``PARTIALLY_FILLED`` then ``CANCELED`` for the remainder), provided that
  is at least ``min_fill_fraction`` of the ordered quantity; otherwise it is ``REJECTED``
  (reason ``insufficient cash``). Rationale: a small price move should shrink a trade, not drop
  it, but a sliver whose fixed fee dominates is worse than no trade.
- As a last guard, the fee of a sell that reduces a long is capped at the cash the account would
  hold after the sale (counted in ``stats.fee_waived``), so cash never goes negative for a
  long-only account. Short positions (``allow_short=True``) are margin trades: buying them back
  is never refused, and cash may then go negative.
- Reasons of rejections, cancellations and expiries are kept per order id (`reason`) and logged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from contracts import (
    Bar,
    Fill,
    IdGenerator,
    Intent,
    LiquiditySide,
    Order,
    OrderStatus,
    OrderType,
    PositionEffect,
    Side,
    TimeInForce,
)
from engine.clock import Clock
from engine.execution.costs import FeeModel, FxConverter
from engine.execution.model import Position
from engine.execution.portfolio import Portfolio, PositionMeta
from engine.telemetry.logging import Logger, get_logger

_FIT_SHRINK = 1.0 - 1e-12
"""Safety margin on the cash-limited quantity, so rounding cannot overdraw the account."""


@dataclass(slots=True)
class BrokerStats:
    """Counters of the venue; money in the account currency."""

    orders: int = 0
    """Orders created (market orders at submit, protective stops), rejected ones included."""
    fills: int = 0
    rejected: int = 0
    canceled: int = 0
    expired: int = 0
    partial_fills: int = 0
    stops_triggered: int = 0
    fees_paid: float = 0.0
    fee_waived: float = 0.0
    slippage_cost: float = 0.0
    """Sum of |fill price - reference price| x quantity."""
    turnover: float = 0.0
    """Traded notional."""


@dataclass(slots=True)
class _Pending:
    order: Order
    intent: Intent


class PaperBroker:
    """Simulated venue for replay and paper trading (see the module docstring for the rules)."""

    def __init__(
        self,
        *,
        portfolio: Portfolio,
        fees: FeeModel,
        fx: FxConverter,
        slippage_bps: float,
        ids: IdGenerator,
        clock: Clock,
        allow_short: bool = False,
        min_fill_fraction: float = 0.5,
        log: Logger | None = None,
    ) -> None:
        if not math.isfinite(slippage_bps) or slippage_bps < 0:
            raise ValueError(f"slippage_bps must be finite and >= 0 (got {slippage_bps})")
        if not 0 < min_fill_fraction <= 1:
            raise ValueError(f"min_fill_fraction must be in (0, 1] (got {min_fill_fraction})")
        self._portfolio = portfolio
        self._fees = fees
        self._fx = fx
        self._slip = slippage_bps * 1e-4
        self._slippage_bps = float(slippage_bps)
        self._ids = ids
        self._clock = clock
        self._allow_short = allow_short
        self._min_fill_fraction = min_fill_fraction
        self._log = log or get_logger("broker")
        self._pending: dict[str, list[_Pending]] = {}
        self._stops: dict[str, Order] = {}
        self._reasons: dict[str, str] = {}
        self.stats = BrokerStats()

    # ------------------------------------------------------------------------------ inspection

    @property
    def pending_orders(self) -> tuple[Order, ...]:
        """Market orders waiting for their symbol's next bar, in submission order per symbol."""
        return tuple(p.order for queue in self._pending.values() for p in queue)

    @property
    def resting_stops(self) -> tuple[Order, ...]:
        return tuple(self._stops.values())

    def stop_for(self, symbol: str) -> Order | None:
        return self._stops.get(symbol)

    def reason(self, order_id: str) -> str | None:
        """Why an order was rejected, canceled or expired (None otherwise)."""
        return self._reasons.get(order_id)

    # ---------------------------------------------------------------------------------- submit

    def submit(self, intent: Intent) -> Order:
        """Turn an intent into a market order pending until the symbol's next bar.

        Returns the order with status SUBMITTED, or REJECTED (see `reason`) when the intent is
        not executable: no price for the symbol yet, a non-market order type, an unknown
        currency, a close without an opposite position, an entry against an open opposite
        position, or a short entry while shorting is disabled.
        """
        self.stats.orders += 1
        order = Order(
            trace_id=intent.trace_id,
            ts_event=intent.ts_event,
            ts_init=self._clock.now(),
            order_id=self._ids.trace_id(),
            intent_id=intent.intent_id,
            symbol=intent.symbol,
            side=intent.side,
            quantity=intent.quantity,
            order_type=OrderType.MARKET,
            time_in_force=TimeInForce.GTD,
            status=OrderStatus.SUBMITTED,
            expires_at=intent.expires_at,
        )
        problem = self._check_intent(intent)
        if problem is not None:
            return self._reject(order, problem)
        self._pending.setdefault(intent.symbol, []).append(_Pending(order=order, intent=intent))
        return order

    def _check_intent(self, intent: Intent) -> str | None:
        if not (math.isfinite(intent.quantity) and intent.quantity > 0):
            return f"quantity must be > 0 (got {intent.quantity})"
        if intent.order_type is not OrderType.MARKET:
            return f"the paper venue fills market orders only (got {intent.order_type.value})"
        if self._portfolio.last_price(intent.symbol) is None:
            return f"no price known for {intent.symbol}"
        if intent.currency != self._fx.account_currency and intent.currency not in self._fx.rates:
            return f"no FX rate for {intent.currency}"
        position = self._portfolio.positions.get(intent.symbol)
        if intent.effect is PositionEffect.CLOSE:
            if position is None:
                return f"close of {intent.symbol}, but no position is open"
            if (position.quantity > 0) == (intent.side is Side.BUY):
                return (
                    f"close must trade against the position ({intent.side.value} vs "
                    f"quantity {position.quantity})"
                )
            return None
        return self._check_entry(intent, position)

    def _check_entry(self, intent: Intent, position: Position | None) -> str | None:
        buying = intent.side is Side.BUY
        if position is not None and (position.quantity > 0) != buying:
            return (
                f"entry {intent.side.value} against an open {intent.symbol} position "
                f"({position.quantity}); close it first"
            )
        if position is None and not buying and not self._allow_short:
            return "short selling is disabled"
        if intent.stop_price is not None:
            wrong = (
                intent.stop_price >= intent.price_ref
                if buying
                else (intent.stop_price <= intent.price_ref)
            )
            if wrong:
                return (
                    f"stop {intent.stop_price} is on the wrong side of the reference price "
                    f"{intent.price_ref} for a {intent.side.value} entry"
                )
        return None

    # --------------------------------------------------------------------------------- on_bars

    def on_bars(self, bars: Sequence[Bar]) -> list[Order | Fill]:
        """Process one step's bars, in the given order; returns order updates and fills.

        Per bar: pending orders of its symbol are expired or filled (submission order), then
        the symbol's resting stop is checked. Afterwards, pending orders of symbols without a
        bar expire when the step's latest timestamp is past their `expires_at`.
        """
        out: list[Order | Fill] = []
        if not bars:
            return out
        for bar in bars:
            queue = self._pending.get(bar.symbol)
            if queue:
                waiting: list[_Pending] = []
                for pending in queue:
                    if bar.ts_event <= pending.order.ts_event:
                        waiting.append(pending)  # not a later bar: keep waiting
                    elif _expired(pending.order, bar.ts_event):
                        out.append(self._expire(pending.order, bar.ts_event))
                    else:
                        self._execute(pending, bar, out)
                if waiting:
                    self._pending[bar.symbol] = waiting
                else:
                    del self._pending[bar.symbol]
            self._check_stop(bar, out)
        step_ts = max(bar.ts_event for bar in bars)
        for symbol in list(self._pending):
            kept = []
            for pending in self._pending[symbol]:
                if _expired(pending.order, step_ts):
                    out.append(self._expire(pending.order, step_ts))
                else:
                    kept.append(pending)
            if kept:
                self._pending[symbol] = kept
            else:
                del self._pending[symbol]
        return out

    def _execute(self, pending: _Pending, bar: Bar, out: list[Order | Fill]) -> None:
        order, intent = pending.order, pending.intent
        ts = bar.ts_event
        if bar.currency != intent.currency:
            out.append(
                self._reject(
                    order, f"bar currency {bar.currency} != intent currency {intent.currency}", ts
                )
            )
            return
        position = self._portfolio.positions.get(order.symbol)
        reference = bar.open if bar.open is not None else bar.close
        price = self._slipped(reference, order.side)
        quantity = order.quantity
        if intent.effect is PositionEffect.CLOSE:
            if position is None or (position.quantity > 0) == (order.side is Side.BUY):
                out.append(self._cancel(order, "position already flat", ts))
                return
            size = abs(position.quantity)
            quantity = size if quantity >= size * (1 - 1e-9) else quantity
        else:
            problem = self._check_entry(intent, position)
            if problem is not None:
                out.append(self._reject(order, problem, ts))
                return
            if order.side is Side.BUY:
                fitted = self._fit_to_cash(quantity, price, intent.currency)
                if fitted < quantity * self._min_fill_fraction:
                    out.append(
                        self._reject(
                            order,
                            f"insufficient cash: {self._portfolio.cash:.2f} "
                            f"{self._fx.account_currency} allows {fitted:.6g} of {quantity:.6g}",
                            ts,
                        )
                    )
                    return
                quantity = min(quantity, fitted)
        meta = None
        if intent.effect is PositionEffect.OPEN:
            meta = PositionMeta(
                intent_id=intent.intent_id,
                horizon=intent.horizon,
                stop_price=intent.stop_price,
                expires_at=ts + intent.horizon.timedelta,
            )
        out.append(self._fill(order, quantity, price, reference, intent.currency, ts, meta))
        if quantity < order.quantity and intent.effect is PositionEffect.OPEN:
            self.stats.partial_fills += 1
            out.append(self._update(order, OrderStatus.PARTIALLY_FILLED, ts))
            out.append(
                self._cancel(
                    order,
                    f"insufficient cash: filled {quantity:.6g} of {order.quantity:.6g}",
                    ts,
                )
            )
        else:
            out.append(self._update(order, OrderStatus.FILLED, ts))
        self._sync_stop(order.symbol, intent, ts, out)

    def _fit_to_cash(self, quantity: float, price: float, currency: str) -> float:
        """The largest quantity <= `quantity` a long entry may buy (see the module docstring)."""
        available = self._portfolio.cash - sum(
            self._fees.fee(self._portfolio.position_value(p))
            for p in self._portfolio.positions.values()
            if p.quantity > 0
        )
        unit = self._fx.to_account(price, currency)
        notional = quantity * unit
        if notional + 2 * self._fees.fee(notional) <= available:
            return quantity
        # notional + 2 * max(minimum, fixed + bps * notional) <= available
        bps = self._fees.bps * 1e-4
        limit = min(
            available - 2 * self._fees.minimum,
            (available - 2 * self._fees.fixed) / (1 + 2 * bps),
        )
        if limit <= 0:
            return 0.0
        fitted = limit / unit * _FIT_SHRINK
        for _ in range(64):
            if fitted * unit + 2 * self._fees.fee(fitted * unit) <= available:
                return fitted
            fitted *= 1.0 - 1e-9
        return 0.0
        return fitted

    def _slipped(self, reference: float, side: Side) -> float:
        return reference * (1 + self._slip) if side is Side.BUY else reference * (1 - self._slip)

    def _fill(
        self,
        order: Order,
        quantity: float,
        price: float,
        reference: float,
        currency: str,
        ts: datetime,
        meta: PositionMeta | None,
    ) -> Fill:
        notional = self._fx.to_account(quantity * price, currency)
        fee = self._fees.fee(notional)
        position = self._portfolio.positions.get(order.symbol)
        if order.side is Side.SELL and position is not None and position.quantity > 0:
            # Last guard of the long-only account: a sale never leaves cash negative.
            room = max(0.0, self._portfolio.cash + notional)
            if fee > room:
                self.stats.fee_waived += fee - room
                self._log.warning("fee_capped", order_id=order.order_id, fee=fee, charged=room)
                fee = room
        fill = Fill(
            trace_id=order.trace_id,
            ts_event=ts,
            ts_init=self._clock.now(),
            fill_id=self._ids.trace_id(),
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            quantity=quantity,
            price=price,
            currency=currency,
            fee=fee,
            fee_currency=self._fx.account_currency,
            slippage_bps=self._slippage_bps,
            liquidity_side=LiquiditySide.TAKER,
        )
        self._portfolio.apply_fill(fill, position_meta=meta)
        self.stats.fills += 1
        self.stats.fees_paid += fee
        self.stats.turnover += notional
        self.stats.slippage_cost += self._fx.to_account(abs(price - reference) * quantity, currency)
        return fill

    # ----------------------------------------------------------------------------------- stops

    def _sync_stop(
        self, symbol: str, intent: Intent, ts: datetime, out: list[Order | Fill]
    ) -> None:
        """Keep at most one protective stop per symbol, sized to the position."""
        position = self._portfolio.positions.get(symbol)
        current = self._stops.get(symbol)
        if position is None:
            if current is not None:
                del self._stops[symbol]
                out.append(self._cancel(current, "position closed", ts))
            return
        size = abs(position.quantity)
        if intent.effect is PositionEffect.OPEN and intent.stop_price is not None:
            source_trace, source_intent, stop_price = (
                intent.trace_id,
                intent.intent_id,
                intent.stop_price,
            )
        elif current is not None and current.stop_price is not None:
            if current.quantity == size:
                return
            source_trace, source_intent, stop_price = (
                current.trace_id,
                current.intent_id,
                current.stop_price,
            )
        else:
            return
        if current is not None:
            out.append(self._cancel(current, "replaced by a stop of the new size", ts))
        stop = Order(
            trace_id=source_trace,
            ts_event=ts,
            ts_init=self._clock.now(),
            order_id=self._ids.trace_id(),
            intent_id=source_intent,
            symbol=symbol,
            side=Side.SELL if position.quantity > 0 else Side.BUY,
            quantity=size,
            order_type=OrderType.STOP,
            stop_price=stop_price,
            time_in_force=TimeInForce.GTC,
            status=OrderStatus.ACCEPTED,
        )
        self.stats.orders += 1
        self._stops[symbol] = stop
        out.append(stop)

    def _check_stop(self, bar: Bar, out: list[Order | Fill]) -> None:
        order = self._stops.get(bar.symbol)
        if order is None:
            return
        level = order.stop_price
        position = self._portfolio.positions.get(bar.symbol)
        if level is None or position is None:  # defensive: stops are removed with positions
            del self._stops[bar.symbol]
            out.append(self._cancel(order, "no position to protect", bar.ts_event))
            return
        reference = _stop_reference(bar, level, sell=order.side is Side.SELL)
        if reference is None:
            return
        del self._stops[bar.symbol]
        self.stats.stops_triggered += 1
        ts = bar.ts_event
        price = self._slipped(reference, order.side)
        quantity = abs(position.quantity)
        out.append(self._fill(order, quantity, price, reference, position.currency, ts, None))
        out.append(self._update(order, OrderStatus.FILLED, ts))

    # ---------------------------------------------------------------------------- transitions

    def _update(self, order: Order, status: OrderStatus, ts: datetime) -> Order:
        return order.model_copy(
            update={"status": status, "ts_event": ts, "ts_init": self._clock.now()}
        )

    def _reject(self, order: Order, reason: str, ts: datetime | None = None) -> Order:
        self.stats.rejected += 1
        self._reasons[order.order_id] = reason
        self._log.info("order_rejected", order_id=order.order_id, reason=reason)
        if ts is None:
            return order.model_copy(update={"status": OrderStatus.REJECTED})
        return self._update(order, OrderStatus.REJECTED, ts)

    def _cancel(self, order: Order, reason: str, ts: datetime) -> Order:
        self.stats.canceled += 1
        self._reasons[order.order_id] = reason
        return self._update(order, OrderStatus.CANCELED, ts)

    def _expire(self, order: Order, ts: datetime) -> Order:
        self.stats.expired += 1
        self._reasons[order.order_id] = f"intent expired at {order.expires_at} before a fill"
        return self._update(order, OrderStatus.EXPIRED, ts)


def _expired(order: Order, ts: datetime) -> bool:
    return order.expires_at is not None and ts > order.expires_at


def _stop_reference(bar: Bar, level: float, *, sell: bool) -> float | None:
    """Price a stop at `level` fills at on this bar (before slippage), or None if not hit.

    A sell stop (protecting a long) triggers when the price falls to the level; a buy stop
    (protecting a short) when it rises to it.
    """

    def through(price: float) -> bool:
        return price <= level if sell else price >= level

    if bar.open is not None and through(bar.open):
        return bar.open  # gapped through the stop: filled at the open
    extreme = bar.low if sell else bar.high
    if extreme is not None:
        return level if through(extreme) else None
    # No intrabar range (close-only): the stop is only observed at the close.
    return bar.close if through(bar.close) else None


__all__ = ["BrokerStats", "PaperBroker"]
