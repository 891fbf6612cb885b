"""Enumerations used by the message contracts.

String enums, so their JSON form is a readable word that survives a schema export, a Kafka
header and a log line unchanged. Adding a member is a schema change: bump the contracts that
use the enum.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum


class Horizon(StrEnum):
    """The period a Signal's mu and sigma refer to.

    A closed set rather than a free duration so the blender can align horizons exactly; the
    square-root-of-time scaling uses :attr:`trading_days`.
    """

    H1 = "1h"
    D1 = "1d"
    W1 = "1w"
    M1 = "1m"
    Q1 = "3m"
    Y1 = "1y"

    @property
    def trading_days(self) -> float:
        """Length in trading days (252 a year, 6.5 trading hours a day for equities)."""
        return _TRADING_DAYS[self]

    @property
    def timedelta(self) -> timedelta:
        """Calendar length, used to expire positions and intents."""
        return _CALENDAR[self]


_TRADING_DAYS: dict[Horizon, float] = {
    Horizon.H1: 1.0 / 6.5,
    Horizon.D1: 1.0,
    Horizon.W1: 5.0,
    Horizon.M1: 21.0,
    Horizon.Q1: 63.0,
    Horizon.Y1: 252.0,
}
_CALENDAR: dict[Horizon, timedelta] = {
    Horizon.H1: timedelta(hours=1),
    Horizon.D1: timedelta(days=1),
    Horizon.W1: timedelta(days=7),
    Horizon.M1: timedelta(days=30),
    Horizon.Q1: timedelta(days=91),
    Horizon.Y1: timedelta(days=365),
}


class BarInterval(StrEnum):
    """Sampling interval of a Bar."""

    M1 = "1min"
    M5 = "5min"
    M15 = "15min"
    H1 = "1h"
    D1 = "1d"
    W1 = "1w"


class Regime(StrEnum):
    """Market regime: volatility level x trend state, plus a crisis state and 'not yet known'."""

    UNKNOWN = "unknown"
    CALM_UPTREND = "calm_uptrend"
    CALM_RANGE = "calm_range"
    CALM_DOWNTREND = "calm_downtrend"
    VOLATILE_UPTREND = "volatile_uptrend"
    VOLATILE_RANGE = "volatile_range"
    VOLATILE_DOWNTREND = "volatile_downtrend"
    CRISIS = "crisis"


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    GTD = "gtd"


class OrderStatus(StrEnum):
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"


class LiquiditySide(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


class PositionEffect(StrEnum):
    """Whether an intent opens/increases a position or closes/reduces one."""

    OPEN = "open"
    CLOSE = "close"


class DecisionKind(StrEnum):
    INTENT = "intent"
    DENIAL = "denial"
    NO_TRADE = "no_trade"


class DenialReason(StrEnum):
    """Why the risk stage refused an opportunity. Every denial carries exactly one."""

    TRADING_HALTED = "trading_halted"
    REDUCING_ONLY = "reducing_only"
    NON_POSITIVE_EDGE = "non_positive_edge"
    INSUFFICIENT_CASH = "insufficient_cash"
    BELOW_MIN_ORDER = "below_min_order"
    MAX_POSITIONS = "max_positions"
    MAX_WEIGHT = "max_weight"
    POSITION_CVAR_LIMIT = "position_cvar_limit"
    PORTFOLIO_CVAR_LIMIT = "portfolio_cvar_limit"
    ALREADY_IN_POSITION = "already_in_position"
    FEES_EXCEED_BUDGET = "fees_exceed_budget"
    NO_PRICE = "no_price"
    STALE_DATA = "stale_data"


class AgentState(StrEnum):
    """Lifecycle of an agent as run by the supervisor."""

    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    QUARANTINED = "quarantined"
    STOPPED = "stopped"
