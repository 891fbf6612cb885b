"""Agents in local worker processes: the same decisions as in process, failures contained.

Real child processes throughout (`python -m engine.workers`, started by the engine), on real
bundled data.
"""

from __future__ import annotations

import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest

from config import EngineConfig, load_config_text
from contracts import AgentState
from engine.app import Engine, RunOptions, StartupError
from engine.bus import Subscription
from engine.data import bundled_path
from engine.execution.journal import Journal
from engine.telemetry.health import ComponentState
from engine.workers.pool import AgentWorkerPool, WorkerStartError
from tests.e2e.conftest import default_config
from tests.kit.config import on_free_port

START, END = date(2005, 1, 1), date(2006, 12, 31)
TABLES = ("decisions", "orders", "fills", "snapshots")


def _in_process(cfg: EngineConfig) -> EngineConfig:
    return cfg.model_copy(
        update={"agents": [a.model_copy(update={"worker": 0}) for a in cfg.agents]}
    )


def _drain(sub: Subscription) -> list[str]:
    out: list[str] = []
    while len(sub):
        topic, message = sub.get_nowait()
        out.append(f"{topic} {message.model_dump_json()}")  # type: ignore[attr-defined]
    return out


def _engine(cfg: EngineConfig, run_dir: Path) -> Engine:
    engine = Engine(on_free_port(cfg), options=RunOptions(start=START, end=END, run_dir=run_dir))
    engine.prepare()
    return engine


async def _replay_to_end(cfg: EngineConfig, run_dir: Path) -> tuple[Engine, bool]:
    engine = _engine(cfg, run_dir)
    async with engine:
        completed = await engine.run()
    return engine, completed


async def _run(cfg: EngineConfig, run_dir: Path) -> tuple[Engine, list[str], list[str]]:
    engine = _engine(cfg, run_dir)
    async with engine:
        signals = engine.bus.subscribe("signal.>", name="test.signals", capacity=1 << 21)
        opportunities = engine.bus.subscribe(
            "opportunity.>", name="test.opportunities", capacity=1 << 20
        )
        assert await engine.run()
    return engine, _drain(signals), _drain(opportunities)


async def test_replay_when_agents_run_in_a_worker_then_same_signals_and_decisions_as_in_process(
    tmp_path: Path,
) -> None:
    # Arrange: the default config (seven agents in worker 1) and the same with none there
    cfg = default_config(seed=3)
    workers = sorted(a.name for a in cfg.agents if a.enabled and a.worker)
    assert len(workers) == 7
    # Act
    split, split_signals, split_opps = await _run(cfg, tmp_path / "split")
    single, single_signals, single_opps = await _run(_in_process(cfg), tmp_path / "single")
    # Assert: every signal the same (arrival order aside), every opportunity the same and in
    # the same order, journals byte-identical
    assert single.workers is None
    assert split.workers is not None
    assert sorted(split.workers.agents) == workers
    assert len(split_signals) > 5_000
    assert sorted(split_signals) == sorted(single_signals)
    assert split_opps == single_opps
    a, b = (
        Journal(tmp_path / "split" / "journal.sqlite"),
        Journal(tmp_path / "single" / "journal.sqlite"),
    )
    assert {t: a.table_digest(t) for t in TABLES} == {t: b.table_digest(t) for t in TABLES}
    # the worker's agents are reported like local ones: summary, counters, handler histograms
    split_summary = split.summary(completed=True)
    single_summary = single.summary(completed=True)
    assert split_summary.signals == single_summary.signals == len(single_signals)
    assert split_summary.agents == single_summary.agents
    hist = split.telemetry.metrics.agent_handler.series
    for name in workers:
        agent = split.workers.agents[name]
        assert agent.state is AgentState.STOPPED
        assert agent.stats.handled > 0
        assert hist[(name,)].count == agent.stats.handled
    assert split.blender is not None
    assert split.blender.stats.late_signals == 0
    assert split.workers.rejected == 0


CRASHING_MODULE = '''
"""Test agents for worker processes: one that kills its process, one that prints."""

import os
from datetime import UTC, datetime

from contracts import Bar
from engine.agent import Agent, NoParams


class ProcessKiller(Agent[NoParams]):
    async def on_bar(self, bar: Bar) -> None:
        if bar.ts_event >= datetime(2005, 6, 1, tzinfo=UTC):
            os._exit(3)  # the whole worker process dies, as on a segfault in a C extension


class Printer(Agent[NoParams]):
    async def on_bar(self, bar: Bar) -> None:
        print("a plugin printing to stdout:", bar.symbol, bar.close)
        self.signal(bar.symbol, mu=0.001, sigma=0.02, horizon="1d", confidence=0.5)


class AlwaysFails(Agent[NoParams]):
    async def on_bar(self, bar: Bar) -> None:
        raise ValueError(f"cannot handle {bar.symbol}")
'''


def _config(agents: str, *, reversal_worker: int = 0) -> EngineConfig:
    """`agents` plus the reversal agent (on the engine's loop unless `reversal_worker`), on six
    stocks of the bundled data."""
    text = textwrap.dedent(
        f"""
        [engine]
        seed = 5

        {agents}

        [[agents]]
        name = "reversal"
        path = "plugins.reversal:ShortTermReversalAgent"
        params = {{ lookback = 5, min_samples = 200 }}
        worker = {reversal_worker}

        [[sources]]
        kind = "replay"
        name = "stocks"
        paths = ["{bundled_path("us_stocks_20_daily_close.csv.gz")}"]
        layout = "wide"
        symbols = ["AAPL", "KO", "XOM", "JPM", "PG", "MSFT"]

        [telemetry.metrics]
        port = 0
        """
    )
    return load_config_text(text, env={})


@pytest.fixture
def worker_test_agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "worker_test_plugins"
    package.mkdir()
    (package / "worker_test_agents.py").write_text(CRASHING_MODULE)
    monkeypatch.syspath_prepend(str(package))  # the engine hands its sys.path to its workers
    monkeypatch.delitem(sys.modules, "worker_test_agents", raising=False)


@pytest.mark.usefixtures("worker_test_agents")
async def test_run_when_worker_process_dies_then_its_agents_quarantined_and_run_completes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Arrange: the killer in worker 1, a printing agent in worker 2, reversal in process
    cfg = _config(
        """
            [[agents]]
            name = "killer"
            path = "worker_test_agents:ProcessKiller"
            worker = 1

            [[agents]]
            name = "printer"
            path = "worker_test_agents:Printer"
            worker = 2
            """
    )
    # Act
    engine, completed = await _replay_to_end(cfg, tmp_path / "run")
    # Assert: the run went on to the end without the dead worker's agent
    assert completed
    workers = engine.workers
    assert workers is not None
    killer = workers.agents["killer"]
    assert killer.state is AgentState.QUARANTINED
    assert killer.stats.last_error is not None
    assert "agent worker 1 exited unexpectedly (exit code 3)" in killer.stats.last_error
    health = {c.name: c for c in engine.health.components()}
    assert health["agent.killer"].state is ComponentState.FAULTED
    assert "exit code 3" in health["agent.killer"].reason
    assert engine.blender is not None
    assert engine.blender.stats.quarantined_agents == ["killer"]
    summary = engine.summary(completed=completed)
    assert summary.agents["killer"]["state"] == "quarantined"
    assert summary.agents["reversal"]["signals"] > 0
    # the printing agent's stdout went to stderr, not into the frame stream: it handled every
    # bar of the run and its signals all reached the blender
    printer = workers.agents["printer"]
    assert printer.state is AgentState.STOPPED
    assert engine.pipeline is not None
    assert printer.stats.handled == engine.pipeline.stats.bars
    assert printer.stats.signals == printer.stats.handled
    assert (
        engine.blender.stats.signals
        == printer.stats.signals + summary.agents["reversal"]["signals"]
    )
    assert workers.rejected == 0
    assert engine.blender.stats.late_signals == 0
    assert "a plugin printing to stdout: KO" in capfd.readouterr().err
    assert workers.exit_codes()[2] == 0
    assert workers.exit_codes()[1] == 3


async def test_start_when_worker_cannot_host_its_agent_then_error_names_worker_and_problem() -> (
    None
):
    # Arrange: a placement naming an agent the config does not have (the engine never builds
    # one, but a worker must refuse rather than run a different set than it was asked to)
    cfg = on_free_port(default_config())
    from engine.app import REPLAY_EPOCH, derive_ids
    from engine.bus import MessageBus
    from engine.clock import ReplayClock
    from engine.telemetry.logging import get_logger

    pool = AgentWorkerPool(
        cfg,
        {3: ["no_such_agent"]},
        bus=MessageBus(),
        clock=ReplayClock(REPLAY_EPOCH),
        ids=derive_ids(0, "test"),
        log=get_logger("test"),
    )
    # Act
    with pytest.raises(WorkerStartError) as caught:
        await pool.start()
    # Assert
    assert caught.value.problems == [
        "agent worker 3: agents not configured or disabled: no_such_agent"
    ]


@pytest.mark.usefixtures("worker_test_agents")
async def test_engine_start_when_worker_agent_class_fails_in_worker_then_startup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: the module imports in the engine but not in the worker (it reads an environment
    # variable the worker does not have): the engine's start fails with the worker's reason
    package = tmp_path / "worker_test_plugins"
    (package / "engine_only.py").write_text(
        "import os\n"
        "if os.environ.get('ONLY_IN_ENGINE') != '1':\n"
        "    raise ImportError('this module needs ONLY_IN_ENGINE=1')\n"
        "from worker_test_agents import Printer as EngineOnly\n"
    )
    monkeypatch.setenv("ONLY_IN_ENGINE", "1")
    cfg = _config(
        """
            [[agents]]
            name = "engine_only"
            path = "engine_only:EngineOnly"
            worker = 1
            """
    )
    engine = _engine(cfg, tmp_path / "run")
    monkeypatch.setenv("ONLY_IN_ENGINE", "0")  # what the worker will see
    # Act
    with pytest.raises(StartupError) as caught:
        await engine.start()
    # Assert: one problem line naming the worker, the agent and the import failure
    (problem,) = caught.value.problems
    assert problem.startswith("agent worker 1: agents[0] (engine_only):")
    assert "this module needs ONLY_IN_ENGINE=1" in problem
    assert engine.workers is not None
    await engine.stop()


@pytest.mark.usefixtures("worker_test_agents")
async def test_run_when_agent_in_worker_keeps_failing_then_quarantined_there_and_run_completes(
    tmp_path: Path,
) -> None:
    # Arrange: the supervisor inside the worker quarantines the agent after max_failures; the
    # worker must not wait for it any more (lock-step) and the engine's blender neither
    cfg = _config(
        """
            [[agents]]
            name = "failing"
            path = "worker_test_agents:AlwaysFails"
            worker = 1
            """
    )
    # Act
    engine, completed = await _replay_to_end(cfg, tmp_path / "run")
    # Assert
    assert completed
    assert engine.workers is not None
    failing = engine.workers.agents["failing"]
    assert failing.state is AgentState.QUARANTINED
    assert failing.stats.failed == cfg.supervisor.max_failures
    assert failing.stats.last_error is not None
    assert "cannot handle" in failing.stats.last_error
    assert engine.blender is not None
    assert engine.blender.stats.quarantined_agents == ["failing"]
    assert engine.workers.exit_codes() == {1: 0}  # the worker itself stopped cleanly
    assert engine.summary(completed=True).agents["reversal"]["signals"] > 0


async def test_replay_when_every_agent_runs_in_workers_then_same_decisions_as_in_process(
    tmp_path: Path,
) -> None:
    # Arrange: no agent left on the engine's loop, so nothing but the replay's own watermarks
    # keeps the blender from closing steps the workers computed ahead of the engine
    in_workers = _config(
        """
        [[agents]]
        name = "rsi"
        path = "plugins.rsi:RsiReversionAgent"
        params = { period = 14, min_samples = 200 }
        worker = 2
        """,
        reversal_worker=1,
    )
    assert [a.worker for a in in_workers.agents] == [2, 1]
    # Act
    split, split_signals, split_opps = await _run(in_workers, tmp_path / "split")
    _single, single_signals, single_opps = await _run(_in_process(in_workers), tmp_path / "one")
    # Assert
    assert split.supervisor is not None
    assert split.supervisor.runners == {}
    assert len(split_opps) > 100
    assert split_opps == single_opps
    assert sorted(split_signals) == sorted(single_signals)
    a, b = (Journal(tmp_path / d / "journal.sqlite") for d in ("split", "one"))
    assert {t: a.table_digest(t) for t in TABLES} == {t: b.table_digest(t) for t in TABLES}


async def test_run_when_stop_requested_mid_run_then_workers_stopped_and_run_returns_false(
    tmp_path: Path,
) -> None:
    # Arrange
    engine = _engine(default_config(), tmp_path / "run")

    def stop_after_a_while(i: int, _ts: object) -> None:
        if i == 100:
            engine.request_stop()

    # Act
    async with engine:
        completed = await engine.run(on_step=stop_after_a_while)
    # Assert: interrupted, every worker asked to stop and gone, its agents stopped in order
    assert not completed
    assert engine.workers is not None
    assert engine.workers.exit_codes() == {1: 0}
    assert {a.state for a in engine.workers.agents.values()} == {AgentState.STOPPED}
    assert engine.pipeline is not None
    assert 100 <= engine.pipeline.stats.steps < 200


async def test_run_when_worker_fails_on_its_own_mid_run_then_agents_quarantined_run_completes(
    tmp_path: Path,
) -> None:
    # Arrange: garbage on a worker's input mid-run (as a torn pipe or a bug would leave it):
    # the worker stops its agents, ends with Failed and the reason, and the engine must not
    # take its agents' STOPPED for a clean stop (it would wait for their watermarks forever)
    cfg = _config(
        """
        [[agents]]
        name = "rsi"
        path = "plugins.rsi:RsiReversionAgent"
        params = { period = 14, min_samples = 200 }
        worker = 1
        """
    )
    engine = _engine(cfg, tmp_path / "run")

    def corrupt_the_pipe(i: int, _ts: object) -> None:
        if i == 50:
            assert engine.workers is not None
            (worker,) = engine.workers._workers  # a test reaching in: no API writes garbage
            assert worker.writer is not None
            worker.writer.write(b"\x00\x00\x00\x08not a pickle")

    # Act
    async with engine:
        completed = await engine.run(on_step=corrupt_the_pipe)
    # Assert
    assert completed
    assert engine.workers is not None
    rsi = engine.workers.agents["rsi"]
    assert rsi.state is AgentState.QUARANTINED
    assert rsi.stats.last_error is not None
    assert "agent worker 1 failed: corrupt frame from the engine" in rsi.stats.last_error
    assert engine.blender is not None
    assert engine.blender.stats.quarantined_agents == ["rsi"]
    assert engine.workers.exit_codes() == {1: 1}
    assert engine.summary(completed=True).agents["reversal"]["signals"] > 0
