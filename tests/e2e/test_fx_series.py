"""The account converts USD positions at an FX series when one is configured."""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path

import pytest

from config import load_config_text
from engine.app import Engine, RunOptions, StartupError
from tests.kit.config import on_free_port

CONFIG = """
[[sources]]
kind = "replay"
name = "stocks"
paths = ["bundled:us_stocks_20_daily_close.csv.gz"]
symbols = ["AAPL", "KO", "XOM", "JPM", "PG", "WMT"]

[[sources]]
kind = "replay"
name = "fx"
paths = ["eurusd.csv"]
data = "macro"

[[agents]]
name = "sma"
path = "plugins.sma_cross:SmaCrossAgent"
params = { fast = 5, slow = 20, confidence = 0.5 }

[execution.fx]
rate = 1.10
series = "EURUSD"

[risk]
min_edge_over_costs = 0.0   # this test is about valuation: let the SMA agent trade
"""


def _write_fx(path: Path, start: date, end: date) -> dict[date, float]:
    """A made-up EURUSD path: 1.20 falling 0.0005 a trading day (gaps on weekends)."""
    rates: dict[date, float] = {}
    day = start
    rate = 1.20
    lines = ["Date,EURUSD"]
    while day <= end:
        if day.weekday() < 5:
            rates[day] = rate
            lines.append(f"{day.isoformat()},{rate:.6f}")
            rate -= 0.0005
        day = date.fromordinal(day.toordinal() + 1)
    path.write_text("\n".join(lines) + "\n")
    return rates


async def test_replay_when_fx_series_configured_then_positions_valued_at_latest_rate(
    tmp_path: Path,
) -> None:
    # Arrange
    start, end = date(2010, 1, 1), date(2010, 12, 31)
    rates = _write_fx(tmp_path / "eurusd.csv", start, end)
    cfg = load_config_text(CONFIG, env={})
    engine = Engine(
        on_free_port(cfg),
        options=RunOptions(start=start, end=end, run_dir=tmp_path / "run", base_dir=tmp_path),
    )
    engine.prepare()
    checked: list[tuple[float, float]] = []

    def check(_index: int, ts: datetime) -> None:
        # After each step: value the held positions by hand at that day's series rate.
        portfolio = engine.portfolio
        assert portfolio is not None
        if not portfolio.positions:
            return
        rate = rates[max(d for d in rates if d <= ts.date())]
        by_hand = sum(
            p.quantity * (portfolio.last_price(s) or 0.0) / rate
            for s, p in portfolio.positions.items()
        )
        checked.append((portfolio.positions_value(), by_hand))

    # Act
    async with engine:
        completed = await engine.run(on_step=check)
    # Assert
    assert completed
    assert engine.pipeline is not None
    assert engine.pipeline.stats.fx_updates > 200
    assert len(checked) > 10, "the run must hold positions for the check to mean anything"
    for engine_value, by_hand in checked:
        assert math.isclose(engine_value, by_hand, rel_tol=1e-9)
    assert engine.broker is not None
    assert math.isclose(engine.broker._fx.rates["USD"], rates[max(rates)])


def test_prepare_when_fx_series_not_published_then_startup_error_names_it(tmp_path: Path) -> None:
    # Arrange
    (tmp_path / "eurusd.csv").write_text("Date,EURUSD\n2010-01-04,1.2\n")
    cfg = load_config_text(CONFIG.replace('series = "EURUSD"', 'series = "DEXUSEU"'), env={})
    engine = Engine(cfg, options=RunOptions(run_dir=tmp_path / "run", base_dir=tmp_path))
    # Act / Assert
    with pytest.raises(StartupError, match="'DEXUSEU' is not published by any macro source"):
        engine.prepare()
