"""The supervisor keeps agents alive, quarantines hopeless ones and never swallows errors."""

from __future__ import annotations

from structlog.testing import capture_logs

from contracts import AgentState
from engine.supervisor import SupervisionPolicy
from engine.testing import AgentHarness, daily_bars
from tests.kit.agents import (
    BrokenAgent,
    BrokenStartAgent,
    EchoAgent,
    FlakyAgent,
    HangingStartAgent,
    InvalidSignalAgent,
    SlowAgent,
)

FAST = SupervisionPolicy(
    backoff_initial_s=0.001, backoff_max_s=0.004, max_failures=5, failure_window=10
)


async def test_feed_when_agent_healthy_then_one_signal_per_bar_with_bar_trace_id() -> None:
    # Arrange
    bars = daily_bars("AAPL", [100.0, 101.0, 102.0])
    # Act
    async with AgentHarness(EchoAgent, name="echo", params={"sigma": 0.03}) as h:
        signals = await h.feed(bars)
    # Assert
    assert [s.trace_id for s in signals] == [b.trace_id for b in bars]
    assert [s.ts_event for s in signals] == [b.ts_event for b in bars]
    assert all(s.agent == "echo" and s.sigma == 0.03 for s in signals)
    assert h.stats.handled == 3
    assert h.stats.failed == 0


async def test_feed_when_agent_raises_every_third_bar_then_restarted_and_keeps_running() -> None:
    # Arrange
    bars = daily_bars("MSFT", [100.0 + i for i in range(30)])
    # Act
    with capture_logs() as logs:
        async with AgentHarness(FlakyAgent, name="flaky", policy=FAST) as h:
            signals = await h.feed(bars)
            state_after_feed = h.state
    # Assert
    assert state_after_feed is AgentState.RUNNING
    assert h.stats.handled == 30
    assert h.stats.failed == 10
    assert h.stats.restarts == 10
    # the signal emitted by a failing hook is discarded, never published half-done
    assert len(signals) == 20
    assert h.stats.discarded_signals == 10
    failing_trace_ids = {b.trace_id for i, b in enumerate(bars, 1) if i % 3 == 0}
    assert not failing_trace_ids & {s.trace_id for s in signals}
    errors = [e for e in logs if e["event"] == "agent hook raised"]
    assert len(errors) == 10
    first = errors[0]
    assert first["agent"] == "flaky"
    assert first["symbol"] == "MSFT"
    assert first["trace_id"] == bars[2].trace_id
    assert first["hook"] == "on_bar"
    assert isinstance(first["exc_info"], RuntimeError)


async def test_feed_when_agent_always_raises_then_quarantined_after_max_failures() -> None:
    # Arrange
    bars = daily_bars("JPM", [50.0 + i for i in range(20)])
    # Act
    with capture_logs() as logs:
        async with AgentHarness(BrokenAgent, name="broken", policy=FAST) as h:
            await h.feed(bars)
            state = h.state
    # Assert
    assert state is AgentState.QUARANTINED
    assert h.stats.failed == FAST.max_failures
    assert h.stats.handled == FAST.max_failures
    assert [s.state for s in h.statuses][-1] is AgentState.QUARANTINED
    assert any(e["event"] == "agent quarantined" and e["agent"] == "broken" for e in logs)
    assert all(e["agent"] == "broken" for e in logs if e["event"] == "agent hook raised")


async def test_start_when_on_start_always_fails_then_quarantined_and_never_fed() -> None:
    # Arrange
    bars = daily_bars("KO", [40.0, 41.0])
    # Act
    with capture_logs() as logs:
        async with AgentHarness(BrokenStartAgent, name="nostart", policy=FAST) as h:
            await h.feed(bars)
    # Assert
    assert h.state is AgentState.QUARANTINED
    assert h.stats.handled == 0
    start_errors = [e for e in logs if e["event"] == "agent hook raised"]
    assert len(start_errors) == FAST.max_failures
    assert all(e["hook"] == "on_start" for e in start_errors)


async def test_feed_when_failures_spread_wider_than_window_then_never_quarantined() -> None:
    # Arrange: 1 failure in 3 messages, window 10 -> at most 4 failures in any window < 5
    policy = SupervisionPolicy(
        backoff_initial_s=0.001, backoff_max_s=0.001, max_failures=5, failure_window=10
    )
    bars = daily_bars("PG", [60.0 + i for i in range(60)])
    # Act
    async with AgentHarness(FlakyAgent, name="flaky", policy=policy) as h:
        await h.feed(bars)
    # Assert
    assert h.runner.failures_in_window <= 4
    assert h.state is not AgentState.QUARANTINED


async def test_feed_when_hook_overruns_budget_then_overrun_reported_and_signal_kept() -> None:
    # Arrange
    policy = SupervisionPolicy(handler_budget_s=0.005)
    bars = daily_bars("XOM", [70.0, 71.0])
    # Act
    with capture_logs() as logs:
        async with AgentHarness(
            SlowAgent, name="slow", params={"delay_s": 0.05}, policy=policy
        ) as h:
            signals = await h.feed(bars)
    # Assert
    assert h.stats.overruns == 2
    assert len(signals) == 2
    overruns = [e for e in logs if e["event"] == "agent hook overran its time budget"]
    assert len(overruns) == 2
    assert overruns[0]["symbol"] == "XOM"
    assert overruns[0]["budget_ms"] == 5.0


async def test_feed_when_signal_invalid_then_counted_as_failure_naming_field() -> None:
    # Arrange
    bars = daily_bars("GE", [10.0])
    # Act
    with capture_logs() as logs:
        async with AgentHarness(InvalidSignalAgent, name="invalid", policy=FAST) as h:
            signals = await h.feed(bars)
    # Assert
    assert signals == []
    assert h.stats.failed == 1
    (error,) = [e for e in logs if e["event"] == "agent hook raised"]
    assert "sigma" in str(error["exc_info"])
    assert "invalid" in str(error["exc_info"])


async def test_feed_when_steps_complete_then_agent_watermark_follows_its_signals() -> None:
    # Arrange
    bars = daily_bars("AAPL", [1.0, 2.0, 3.0])
    # Act
    async with AgentHarness(EchoAgent, name="echo") as h:
        await h.feed(bars)
    # Assert
    assert [w.ts_event for w in h.watermarks] == [b.ts_event for b in bars]
    assert all(w.origin == "echo" for w in h.watermarks)
    assert h.stats.watermarks_forwarded == 3
    kinds = [type(m).__name__ for m in h.received if type(m).__name__ != "AgentStatus"]
    assert kinds == ["Signal", "Watermark"] * 3


async def test_start_when_on_start_hangs_then_timeout_counts_as_failure_and_quarantines() -> None:
    # Arrange
    policy = SupervisionPolicy(
        backoff_initial_s=0.001,
        backoff_max_s=0.001,
        max_failures=2,
        failure_window=2,
        start_timeout_s=0.01,
    )
    # Act
    with capture_logs() as logs:
        async with AgentHarness(HangingStartAgent, name="hang", policy=policy) as h:
            state = h.state
    # Assert
    assert state is AgentState.QUARANTINED
    errors = [e for e in logs if e["event"] == "agent hook raised"]
    assert [e["hook"] for e in errors] == ["on_start", "on_start"]
    assert all(isinstance(e["exc_info"], TimeoutError) for e in errors)


async def test_watchdog_when_hook_still_running_past_budget_then_reported_once() -> None:
    # Arrange: budget 10 ms, hook takes 300 ms
    policy = SupervisionPolicy(handler_budget_s=0.01)
    bars = daily_bars("CVX", [90.0])
    # Act
    with capture_logs() as logs:
        async with AgentHarness(
            SlowAgent, name="slow", params={"delay_s": 0.3}, policy=policy
        ) as h:
            await h.feed(bars)
    # Assert
    overruns = [e for e in logs if e["event"] == "agent hook overran its time budget"]
    assert len(overruns) == 1
    assert overruns[0]["still_running"] is True
    assert h.stats.overruns == 1


async def test_feed_when_on_step_end_always_raises_then_quarantined_and_silent_after() -> None:
    # Arrange
    from tests.kit.agents import BrokenStepEndAgent

    bars = daily_bars("AAPL", [10.0 + i for i in range(12)])
    # Act
    async with AgentHarness(BrokenStepEndAgent, name="stepend", policy=FAST) as h:
        await h.feed(bars)
        state = h.state
    # Assert: one signal per bar until the fifth failing step end quarantines it, none after
    assert state is AgentState.QUARANTINED
    assert h.stats.failed == FAST.max_failures
    assert len(h.signals) == FAST.max_failures
    assert [s.state for s in h.statuses][-1] is AgentState.QUARANTINED
    assert h.watermarks == h.watermarks[: FAST.max_failures - 1]


async def test_feed_when_on_step_end_overridden_then_called_per_step_before_watermark() -> None:
    # Arrange: an agent that records the steps its hook saw and emits a signal there
    from datetime import datetime

    from contracts import Bar
    from engine.agent import Agent, NoParams

    class StepCounter(Agent[NoParams]):
        async def on_start(self) -> None:
            self.steps: list[datetime] = []

        async def on_bar(self, bar: Bar) -> None:
            self.last_symbol = bar.symbol

        async def on_step_end(self, ts: datetime) -> None:
            self.steps.append(ts)
            self.signal(self.last_symbol, mu=0.0, sigma=0.01, horizon="1d", confidence=0.1)

    bars = daily_bars("AAPL", [1.0, 2.0, 3.0]) + daily_bars("KO", [4.0, 5.0, 6.0])
    # Act
    async with AgentHarness(StepCounter, name="steps") as h:
        await h.feed(bars)
    # Assert: one call per step, its signal carries the step's time and precedes the watermark
    agent = h.agent
    assert isinstance(agent, StepCounter)
    assert agent.steps == sorted({b.ts_event for b in bars})
    assert [s.ts_event for s in h.signals] == agent.steps
    kinds = [type(m).__name__ for m in h.received if type(m).__name__ != "AgentStatus"]
    assert kinds == ["Signal", "Watermark"] * 3
