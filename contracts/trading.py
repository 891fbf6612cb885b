"""Contracts of the trading path: Opportunity -> Intent -> Order -> Fill, and the DecisionLog.

Quantities and prices are floats (not Decimal): fractional shares and FX conversion are part of
sizing, and the paper venue rounds to instrument increments where it matters. Money fields say
their currency explicitly, because the account (EUR) and the instruments (USD) differ.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.base import (
    Contract,
    FiniteFloat,
    JsonScalar,
    Name,
    NonNegativeFloat,
    PositiveFloat,
    Probability,
    Sha256Hex,
    Symbol,
    TraceId,
    UtcDatetime,
)
from contracts.enums import (
    AgentState,
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

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Identifier = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
QuantileLevel = Annotated[float, Field(strict=True, gt=0, lt=1, allow_inf_nan=False)]


class _Part(BaseModel):
    """A nested value object: as strict as a contract, but without its own envelope."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Quantile(_Part):
    level: QuantileLevel
    value: FiniteFloat


class Contribution(_Part):
    """One signal's part in a blended opportunity."""

    agent: Name
    weight: FiniteFloat
    mu: FiniteFloat
    sigma: PositiveFloat
    confidence: Probability
    signal_trace_id: TraceId


class Opportunity(Contract):
    """The blender's view of one (symbol, step): blended mu/sigma and predictive quantiles."""

    schema_version: Literal[1] = 1
    symbol: Symbol
    horizon: Horizon
    mu: FiniteFloat
    sigma: PositiveFloat
    quantiles: tuple[Quantile, ...] = ()
    contributions: tuple[Contribution, ...] = Field(min_length=1)
    regime: Regime = Regime.UNKNOWN
    var: NonNegativeFloat | None = Field(default=None, description="Value at risk, return units")
    cvar: NonNegativeFloat | None = Field(
        default=None, description="Expected shortfall, return units"
    )
    blender: str = Field(min_length=1, max_length=64, description="Blending policy used")
    model_version: str = Field(min_length=1, max_length=128)

    @model_validator(mode="after")
    def _quantiles_sorted_and_not_crossing(self) -> Self:
        for lo, hi in zip(self.quantiles, self.quantiles[1:], strict=False):
            if hi.level <= lo.level:
                raise ValueError(f"quantile levels must increase: {lo.level} then {hi.level}")
            if hi.value < lo.value:
                raise ValueError(
                    f"quantiles cross: q{lo.level}={lo.value} > q{hi.level}={hi.value}"
                )
        return self


class Intent(Contract):
    """A sized instruction from the risk stage to the venue."""

    schema_version: Literal[1] = 1
    intent_id: Identifier
    symbol: Symbol
    side: Side
    effect: PositionEffect = PositionEffect.OPEN
    quantity: PositiveFloat
    price_ref: PositiveFloat = Field(description="Reference price used for sizing")
    notional: PositiveFloat = Field(description="quantity x price_ref, instrument currency")
    currency: Currency = "USD"
    order_type: OrderType = OrderType.MARKET
    limit_price: PositiveFloat | None = None
    stop_price: PositiveFloat | None = Field(default=None, description="Protective stop level")
    horizon: Horizon
    risk_budget: NonNegativeFloat = Field(description="Loss at the stop incl. fees, account ccy")
    cvar_contribution: NonNegativeFloat = 0.0
    expires_at: UtcDatetime

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and self.limit_price is None:
            raise ValueError(f"order_type={self.order_type.value} requires limit_price")
        if self.expires_at <= self.ts_event:
            raise ValueError(f"expires_at ({self.expires_at.isoformat()}) must be after ts_event")
        return self


class Order(Contract):
    schema_version: Literal[1] = 1
    order_id: Identifier
    intent_id: Identifier
    symbol: Symbol
    side: Side
    quantity: PositiveFloat
    order_type: OrderType
    limit_price: PositiveFloat | None = None
    stop_price: PositiveFloat | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    status: OrderStatus = OrderStatus.SUBMITTED
    expires_at: UtcDatetime | None = None
    venue: str = Field(default="paper", pattern=r"^[a-z][a-z0-9_]{0,31}$")


class Fill(Contract):
    schema_version: Literal[1] = 1
    fill_id: Identifier
    order_id: Identifier
    symbol: Symbol
    side: Side
    quantity: PositiveFloat
    price: PositiveFloat
    currency: Currency = "USD"
    fee: NonNegativeFloat
    fee_currency: Currency = "EUR"
    slippage_bps: FiniteFloat = 0.0
    liquidity_side: LiquiditySide = LiquiditySide.TAKER


class DecisionLog(Contract):
    """One auditable decision of the risk stage, with the inputs that made it.

    Exactly one of: an intent (kind=intent), a denial reason (kind=denial), or neither
    (kind=no_trade, e.g. an empty slate). `inputs` holds scalars only so the log stays a flat,
    diffable record; `config_hash` ties it to the exact configuration.
    """

    schema_version: Literal[1] = 1
    decision_id: Identifier
    kind: DecisionKind
    symbol: Symbol | None = None
    reason: DenialReason | None = None
    detail: str = Field(default="", max_length=2_000)
    intent: Intent | None = None
    inputs: dict[str, JsonScalar] = Field(default_factory=dict)
    model_version: str = Field(min_length=1, max_length=128)
    config_hash: Sha256Hex

    @model_validator(mode="after")
    def _kind_matches_payload(self) -> Self:
        if self.kind is DecisionKind.INTENT and (self.intent is None or self.reason is not None):
            raise ValueError("kind=intent requires an intent and no reason")
        if self.kind is DecisionKind.DENIAL and (self.reason is None or self.intent is not None):
            raise ValueError("kind=denial requires a reason and no intent")
        if self.kind is DecisionKind.NO_TRADE and (
            self.reason is not None or self.intent is not None
        ):
            raise ValueError("kind=no_trade takes neither a reason nor an intent")
        return self


class AgentStatus(Contract):
    """Published by the agent supervisor when an agent changes state (e.g. is quarantined),
    so the blender stops waiting for an agent that will not report again."""

    schema_version: Literal[1] = 1
    agent: Name
    state: AgentState
    reason: str = Field(default="", max_length=2_000)
    failures: int = Field(default=0, ge=0, strict=True)


__all__ = [
    "AgentStatus",
    "Contribution",
    "DecisionLog",
    "Fill",
    "Intent",
    "Opportunity",
    "Order",
    "Quantile",
]
