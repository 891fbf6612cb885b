"""A plugin author's first agent: written in a new module, configured by import path, replayed.

Nothing here touches engine internals: the agent module - the calibrated example of
plugins/README.md, verbatim - uses only the public plugin API (`engine.calibrated`,
`contracts`), lives outside the repository, and is configured by TOML text as a user writes it.
The evidence is what the blender publishes: opportunities carrying the new agent's
contributions.
"""

from __future__ import annotations

import re
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest

from config import load_config_text
from contracts import Opportunity, topics
from engine.app import Engine, RunOptions
from engine.data import bundled_path

ROOT = Path(__file__).resolve().parents[2]


def _readme_agent_module() -> str:
    """The calibrated agent example of plugins/README.md, verbatim: the guide shows what this
    test runs."""
    readme = (ROOT / "plugins" / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    (module,) = [b for b in blocks if "CalibratedAgent[" in b]
    return module


async def test_replay_when_author_agent_configured_by_path_then_its_signals_reach_the_blender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: the module lives outside the repository, importable like any installed code
    package = tmp_path / "author_plugins"
    package.mkdir()
    (package / "quarter_change.py").write_text(_readme_agent_module())
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.delitem(sys.modules, "quarter_change", raising=False)
    cfg = load_config_text(
        textwrap.dedent(
            f"""
            [engine]
            seed = 7

            [[agents]]
            name = "quarter"
            path = "quarter_change:QuarterChangeAgent"
            params = {{ lookback = 42, min_samples = 300, emit_zero_confidence = true }}

            [[sources]]
            kind = "replay"
            name = "stocks"
            paths = ["{bundled_path("us_stocks_20_daily_close.csv.gz")}"]
            layout = "wide"
            symbols = ["AAPL", "KO", "XOM", "JPM", "PG", "MSFT"]

            [telemetry.metrics]
            port = 0
            """
        ),
        env={},
    )
    engine = Engine(
        cfg,
        options=RunOptions(
            start=date(2004, 1, 1), end=date(2005, 12, 31), run_dir=tmp_path / "run"
        ),
    )
    engine.prepare()
    # Act
    async with engine:
        # what the blender publishes, kept whole (a test observer, not part of the run)
        seen = engine.bus.subscribe(
            topics.ALL_OPPORTUNITIES, name="test.opportunities", capacity=1_000_000
        )
        completed = await engine.run()
    opportunities = [seen.get_nowait()[1] for _ in range(len(seen))]
    # Assert: the agent ran and emitted, and the blender blended its signals
    assert completed
    assert engine.supervisor is not None
    stats = engine.supervisor.runners["quarter"].stats
    assert stats.failed == 0
    assert stats.signals > 1000
    assert engine.blender is not None
    assert engine.blender.stats.signals == stats.signals
    assert engine.blender.stats.late_signals == 0
    assert opportunities
    assert all(isinstance(o, Opportunity) for o in opportunities)
    assert {c.agent for o in opportunities for c in o.contributions} == {"quarter"}
