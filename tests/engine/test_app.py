"""The composition root wires config -> bus, clock, agents under supervision."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from config import load_config_text
from contracts import AgentState, Signal, Watermark, topics
from engine.app import Engine, LiveTradingUnavailableError, RunOptions, StartupError
from engine.testing import make_bar
from tests.kit.config import on_free_port

T1 = datetime(2020, 1, 2, 21, tzinfo=UTC)
T2 = datetime(2020, 1, 3, 21, tzinfo=UTC)

CONFIG = """
[engine]
seed = 11

[[sources]]
kind = "replay"
name = "prices"
paths = ["bundled:us_stocks_20_daily_close.csv.gz"]
symbols = ["AAPL"]
start = 2020-01-02
end = 2020-01-03

[[sources]]
kind = "replay"
name = "yields"
paths = ["bundled:us_treasury_yield_curves_daily.csv.gz"]
data = "macro"
start = 2016-01-04
end = 2016-01-05

[[agents]]
name = "echo"
path = "tests.kit.agents:EchoAgent"
params = { sigma = 0.04 }
"""


def _watermark(origin: str, ts: datetime, n: int) -> Watermark:
    return Watermark(trace_id=f"{n:032x}", ts_event=ts, ts_init=ts, origin=origin)


async def test_start_when_two_sources_then_agent_watermark_waits_for_both(
    tmp_path: Path,
) -> None:
    # Arrange: the replay feed is not run; the test publishes by hand to control the order
    engine = Engine(
        on_free_port(load_config_text(CONFIG, env={})), options=RunOptions(run_dir=tmp_path / "run")
    )
    out = engine.bus.subscribe(
        [topics.ALL_SIGNALS, topics.ALL_AGENT_WATERMARKS], name="test.out", capacity=64
    )
    bar = make_bar("AAPL", T1, 100.0)
    async with engine:
        # Act
        await engine.bus.publish_batch(
            [
                (topics.bar("AAPL"), bar),
                (topics.source_watermark("prices"), _watermark("prices", T1, 1)),
            ]
        )
        first = await out.get()
        only_prices_done = out.depth
        await engine.bus.publish(topics.source_watermark("yields"), _watermark("yields", T2, 2))
        second = await out.get()
        await engine.bus.publish(topics.source_watermark("prices"), _watermark("prices", T2, 3))
        third = await out.get()
        assert engine.supervisor is not None
        runner = engine.supervisor.runners["echo"]
        state = runner.state
    # Assert
    assert isinstance(first[1], Signal)
    assert first[1].sigma == 0.04
    assert first[1].trace_id == bar.trace_id
    assert only_prices_done == 0  # the yields source has not passed T1 yet
    assert second == (topics.agent_watermark("echo"), second[1])
    assert isinstance(second[1], Watermark)
    assert second[1].ts_event == T1  # min over sources: prices at T1, yields at T2
    assert isinstance(third[1], Watermark)
    assert third[1].ts_event == T2
    assert state is AgentState.RUNNING


async def test_start_when_agent_path_bad_then_startup_error_before_anything_runs() -> None:
    # Arrange
    engine = Engine(
        load_config_text('[[agents]]\nname = "x"\npath = "tests.kit.agents:Nope"\n', env={})
    )
    # Act / Assert
    with pytest.raises(StartupError, match="has no attribute 'Nope'"):
        await engine.start()
    assert engine.supervisor is None
    assert engine.run_dir is None


def test_init_when_mode_live_then_refused_with_clear_message() -> None:
    # Arrange
    cfg = load_config_text('[engine]\nmode = "live"\nclock = "live"\n', env={})
    # Act / Assert
    with pytest.raises(LiveTradingUnavailableError, match="no live broker"):
        Engine(cfg)


def test_context_when_same_seed_then_same_agent_ids_and_independent_of_other_agents() -> None:
    # Arrange
    a = Engine(load_config_text("[engine]\nseed = 5\n", env={}))
    b = Engine(load_config_text("[engine]\nseed = 5\n", env={}))
    c = Engine(load_config_text("[engine]\nseed = 6\n", env={}))
    # Act
    gen_a, gen_b = a.ids_for("momentum"), b.ids_for("momentum")
    ids_a = [gen_a.trace_id(), gen_a.trace_id()]
    ids_b = [gen_b.trace_id(), gen_b.trace_id()]
    ids_c = c.ids_for("momentum").trace_id()
    # Assert
    assert ids_a == ids_b
    assert ids_a[0] != ids_a[1]
    assert ids_c != ids_a[0]
    assert a.ids_for("reversal").trace_id() != ids_a[0]
