"""The Signal: an agent's forecast with its uncertainty.

mu and sigma are in units of simple return over `horizon` (mu=0.01, sigma=0.05 over 1m means
"+1 % expected over a month, 5 % standard deviation"). sigma must be strictly positive: an agent
that claims certainty breaks precision weighting (weight ~ 1/sigma^2) and is rejected here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.base import (
    Contract,
    FeatureName,
    FiniteFloat,
    Name,
    PositiveFloat,
    Probability,
    Symbol,
)
from contracts.enums import Horizon, Regime


class Signal(Contract):
    schema_version: Literal[1] = 1
    agent: Name
    symbol: Symbol
    mu: FiniteFloat = Field(description="Expected simple return over the horizon")
    sigma: PositiveFloat = Field(description="Standard deviation of the return over the horizon")
    horizon: Horizon
    confidence: Probability = Field(
        description="How much the agent trusts its own calibration, in [0, 1]"
    )
    regime: Regime = Regime.UNKNOWN
    features: dict[FeatureName, FiniteFloat] | None = Field(
        default=None, description="Optional inputs the agent used, for audit and the blender"
    )
