"""Versioned message contracts and topic names. Depends on nothing else in tradeengine."""

from contracts import topics
from contracts.base import Contract
from contracts.control import RunControl
from contracts.enums import (
    AgentState,
    BarInterval,
    DecisionKind,
    DenialReason,
    Horizon,
    LiquiditySide,
    OrderStatus,
    OrderType,
    PositionEffect,
    Regime,
    Side,
    TimeInForce,
)
from contracts.ids import IdGenerator
from contracts.market import Bar, MacroObservation, SocialPost, Watermark
from contracts.signal import Signal
from contracts.trading import (
    AgentStatus,
    Contribution,
    DecisionLog,
    Fill,
    Intent,
    Opportunity,
    Order,
    Quantile,
)

ALL_CONTRACTS: tuple[type[Contract], ...] = (
    Bar,
    MacroObservation,
    SocialPost,
    Watermark,
    Signal,
    Opportunity,
    Intent,
    Order,
    Fill,
    DecisionLog,
    AgentStatus,
    RunControl,
)

__all__ = [
    "ALL_CONTRACTS",
    "AgentState",
    "AgentStatus",
    "Bar",
    "BarInterval",
    "Contract",
    "Contribution",
    "DecisionKind",
    "DecisionLog",
    "DenialReason",
    "Fill",
    "Horizon",
    "IdGenerator",
    "Intent",
    "LiquiditySide",
    "MacroObservation",
    "Opportunity",
    "Order",
    "OrderStatus",
    "OrderType",
    "PositionEffect",
    "Quantile",
    "Regime",
    "RunControl",
    "Side",
    "Signal",
    "SocialPost",
    "TimeInForce",
    "Watermark",
    "topics",
]
