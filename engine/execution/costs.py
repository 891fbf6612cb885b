"""Trading costs and currency conversion, shared by the risk stage and the paper venue.

Both must use the same formulas: risk sizes a trade so that the loss at the stop plus fees fits
the budget, and the venue charges exactly those fees. One module, one formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from config.models import ExecutionConfig


@dataclass(frozen=True, slots=True)
class FeeModel:
    """Per-order fee in the account currency: max(minimum, fixed + bps * notional)."""

    fixed: float = 1.0
    bps: float = 0.0
    minimum: float = 1.0

    def fee(self, notional_account: float) -> float:
        """Fee of one order whose notional (in the account currency) is given."""
        return max(self.minimum, self.fixed + self.bps * 1e-4 * abs(notional_account))


class FxConverter:
    """Converts instrument-currency amounts to the account currency.

    `rates[c]` is units of currency c per one unit of the account currency (EURUSD 1.08 means
    1 EUR = 1.08 USD). One converter is shared by the portfolio, the venue and risk, so when an
    FX series is configured, `set_rate` moves all of them to the new rate at once.
    """

    __slots__ = ("account_currency", "rates")

    def __init__(self, account_currency: str, rates: dict[str, float]) -> None:
        self.account_currency = account_currency
        self.rates = dict(rates)
        for currency, rate in self.rates.items():
            self.set_rate(currency, rate)

    def set_rate(self, currency: str, rate: float) -> None:
        if not (math.isfinite(rate) and rate > 0.0):
            raise ValueError(f"FX rate {currency}/{self.account_currency} must be > 0, got {rate}")
        self.rates[currency] = rate

    def to_account(self, amount: float, currency: str) -> float:
        if currency == self.account_currency:
            return amount
        try:
            return amount / self.rates[currency]
        except KeyError:
            raise KeyError(
                f"no FX rate from {currency} to {self.account_currency} configured"
            ) from None

    def from_account(self, amount: float, currency: str) -> float:
        if currency == self.account_currency:
            return amount
        return amount * self.rates[currency]


def costs_from_config(
    cfg: ExecutionConfig, instrument_currency: str = "USD"
) -> tuple[FeeModel, FxConverter]:
    fees = FeeModel(fixed=cfg.fees.fixed, bps=cfg.fees.bps, minimum=cfg.fees.minimum)
    rates = (
        {} if instrument_currency == cfg.account_currency else {instrument_currency: cfg.fx.rate}
    )
    return fees, FxConverter(account_currency=cfg.account_currency, rates=rates)
