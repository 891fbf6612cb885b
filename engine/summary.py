"""The run summary: what a replay did and how the account fared, in figures a quant expects.

Conventions (stated in summary.json too, so nobody has to guess):
- returns are simple returns of account equity (account currency) between consecutive steps;
- annualisation uses the observed steps per year for volatility and Sharpe (about 252 for
  daily data; 252 is assumed for runs shorter than a quarter), and calendar years between the
  first and last step for the annualised (compound) return;
- Sharpe uses a zero risk-free rate;
- turnover = traded notional (account currency) / average equity, per year;
- max drawdown is the largest peak-to-trough fall of equity, as a fraction of the peak.
A baseline (the bundled S&P 500 index, price only, same period) is reported beside the strategy
when available, because a figure without a baseline says little.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from engine.execution.model import PortfolioSnapshot

TRADING_DAYS = 252.0


@dataclass(frozen=True, slots=True)
class PerformanceFigures:
    start_equity: float
    final_equity: float
    total_return: float
    annualized_return: float
    volatility: float
    sharpe: float
    max_drawdown: float


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_dir: str
    period_start: str | None
    period_end: str | None
    steps: int
    bars: int
    signals: int
    opportunities: int
    intents: int
    denials: int
    orders: int
    fills: int
    fees_paid: float
    turnover_per_year: float
    account_currency: str
    performance: PerformanceFigures
    baseline: dict[str, Any] | None = None
    denial_reasons: dict[str, int] = field(default_factory=dict)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    config_hash: str = ""
    completed: bool = True
    """False when the replay was interrupted (SIGINT/SIGTERM) before its end."""
    wall_seconds: float = 0.0
    conventions: str = (
        "simple per-step returns of equity; vol and Sharpe annualised with the observed "
        "steps per year (252 assumed for runs under a quarter); "
        "Sharpe with zero risk-free rate; turnover = traded notional / mean equity per year"
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def performance(
    equity: Sequence[float], first: datetime | None, last: datetime | None, start_equity: float
) -> PerformanceFigures:
    """Figures of an equity curve (one value per step)."""
    if not equity:
        return PerformanceFigures(start_equity, start_equity, 0.0, 0.0, 0.0, 0.0, 0.0)
    final = equity[-1]
    total = final / start_equity - 1.0
    years = (last - first).days / 365.25 if first is not None and last is not None else 0.0
    annualized = (final / start_equity) ** (1.0 / years) - 1.0 if years > 0 and final > 0 else 0.0
    curve = [start_equity, *equity]
    returns = [b / a - 1.0 for a, b in itertools.pairwise(curve) if a > 0]
    if len(returns) > 1:
        mean = math.fsum(returns) / len(returns)
        var = math.fsum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
        std = math.sqrt(var)
    else:
        mean, std = 0.0, 0.0
    # Steps per year from the data itself (252 for daily bars, ~1,640 for hourly FX, 52 for
    # weekly); a run shorter than a quarter is too short to measure it, so 252 is assumed.
    per_year = len(returns) / years if years >= 0.25 else TRADING_DAYS
    volatility = std * math.sqrt(per_year)
    sharpe = mean / std * math.sqrt(per_year) if std > 0 else 0.0
    peak = curve[0]
    max_dd = 0.0
    for value in curve:
        peak = max(peak, value)
        if peak > 0:
            max_dd = max(max_dd, 1.0 - value / peak)
    return PerformanceFigures(
        start_equity=start_equity,
        final_equity=final,
        total_return=total,
        annualized_return=annualized,
        volatility=volatility,
        sharpe=sharpe,
        max_drawdown=max_dd,
    )


def baseline_from_prices(
    prices: Mapping[datetime, float], first: datetime | None, last: datetime | None
) -> dict[str, Any] | None:
    """Buy-and-hold figures of a price series over [first, last] (steps it has)."""
    if first is None or last is None:
        return None
    window = [p for ts, p in sorted(prices.items()) if first <= ts <= last]
    if len(window) < 2:
        return None
    figures = performance(window[1:], first, last, window[0])
    return asdict(figures)


def render(summary: RunSummary) -> str:
    """The human-readable summary printed at the end of a run."""
    p = summary.performance
    ccy = summary.account_currency
    lines = [
        "",
        "tradeengine run summary",
        f"  period            {summary.period_start} .. {summary.period_end}",
        f"  steps / bars      {summary.steps:,} / {summary.bars:,}",
        f"  signals           {summary.signals:,}",
        f"  opportunities     {summary.opportunities:,}",
        f"  intents / denials {summary.intents:,} / {summary.denials:,}",
        f"  orders / fills    {summary.orders:,} / {summary.fills:,}",
        f"  final equity      {p.final_equity:,.2f} {ccy} (start {p.start_equity:,.2f})",
        f"  total return      {p.total_return:+.2%}",
        f"  annualized return {p.annualized_return:+.2%}",
        f"  volatility        {p.volatility:.2%} (annualized)",
        f"  Sharpe            {p.sharpe:.2f} (rf = 0)",
        f"  max drawdown      {p.max_drawdown:.2%}",
        f"  turnover          {summary.turnover_per_year:.2f}x equity per year",
        f"  fees paid         {summary.fees_paid:,.2f} {ccy}",
    ]
    if summary.baseline is not None:
        b = summary.baseline
        lines.append(
            f"  baseline          {b['name']}: total {b['total_return']:+.2%}, "
            f"annualized {b['annualized_return']:+.2%}, max drawdown {b['max_drawdown']:.2%}"
        )
    if summary.denial_reasons:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(summary.denial_reasons.items()))
        lines.append(f"  denials by reason {reasons}")
    lines.append(f"  wall time         {summary.wall_seconds:.1f} s")
    lines.append(f"  run directory     {summary.run_dir}")
    return "\n".join(lines) + "\n"


def equity_curve(snapshots: Sequence[PortfolioSnapshot]) -> list[float]:
    return [s.equity for s in snapshots]
