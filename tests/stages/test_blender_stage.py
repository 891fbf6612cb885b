"""BlenderStage: closes steps on agent watermarks, follows quarantines, counts late signals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import pytest
from structlog.testing import capture_logs

from contracts import (
    AgentState,
    AgentStatus,
    Horizon,
    IdGenerator,
    Opportunity,
    Signal,
    Watermark,
    topics,
)
from engine.bus import MessageBus, Subscription
from engine.clock import ReplayClock
from engine.stages.blender import BlenderStage, PrecisionBlender
from engine.telemetry.logging import get_logger
from tests.stages.factories import T0, make_signal, make_watermark, step, tid


class Rig:
    """A bus, a running BlenderStage and a collector of what it publishes."""

    def __init__(
        self,
        agents: Sequence[str],
        *,
        seed: int = 1,
        min_signals: int = 1,
        sources: Sequence[str] = (),
    ) -> None:
        self.bus = MessageBus(default_capacity=1024)
        self.clock = ReplayClock(T0)
        self.stage = BlenderStage(
            bus=self.bus,
            policy=PrecisionBlender(Horizon.D1),
            agents=agents,
            clock=self.clock,
            ids=IdGenerator(seed),
            log=get_logger("blender"),
            min_signals=min_signals,
            sources=sources,
        )
        self.out: Subscription = self.bus.subscribe(
            [topics.ALL_OPPORTUNITIES, topics.stage_watermark("blender")], name="collector"
        )
        self.received: list[object] = []

    async def send(self, *messages: Signal | Watermark | AgentStatus, source: bool = False) -> None:
        for m in messages:
            if isinstance(m, Signal):
                topic = topics.signal(m.agent, m.symbol)
            elif isinstance(m, AgentStatus):
                topic = topics.agent_status(m.agent)
            elif source:
                topic = topics.source_watermark(m.origin)
            else:
                topic = topics.agent_watermark(m.origin)
            await self.bus.publish(topic, m)
        await self.settle()

    async def settle(self) -> None:
        """Let the stage handle everything published so far, then collect its output."""
        mailbox = self.bus.subscription("stage.blender")
        for _ in range(100):
            await asyncio.sleep(0)
            if mailbox.depth == 0:
                break
        for _ in range(5):
            await asyncio.sleep(0)
        while self.out.depth:
            self.received.append(self.out.get_nowait()[1])

    @property
    def opportunities(self) -> list[Opportunity]:
        return [m for m in self.received if isinstance(m, Opportunity)]

    @property
    def watermarks(self) -> list[datetime]:
        return [m.ts_event for m in self.received if isinstance(m, Watermark)]


@pytest.fixture
async def rig2() -> AsyncIterator[Rig]:
    rig = Rig(["a", "b"])
    await rig.stage.start()
    yield rig
    await rig.stage.stop()


def _quarantine(agent: str) -> AgentStatus:
    return AgentStatus(
        trace_id=tid(),
        ts_event=T0,
        ts_init=T0,
        agent=agent,
        state=AgentState.QUARANTINED,
        reason="boom",
        failures=5,
    )


async def test_stage_when_only_one_of_two_agents_done_then_no_opportunity_until_both(
    rig2: Rig,
) -> None:
    # Arrange
    await rig2.send(make_signal("a"), make_signal("b"), make_watermark("a", T0))
    opportunities_before = list(rig2.opportunities)
    # Act
    await rig2.send(make_watermark("b", T0))
    # Assert
    assert opportunities_before == []
    assert len(rig2.opportunities) == 1
    assert {c.agent for c in rig2.opportunities[0].contributions} == {"a", "b"}
    assert rig2.watermarks == [T0]
    assert isinstance(rig2.received[-1], Watermark)  # opportunities first, then the watermark
    assert rig2.received[-1].origin == "blender"
    assert rig2.stage.stats.opportunities == 1
    assert rig2.stage.stats.steps == 1


async def test_stage_when_agent_quarantined_then_no_longer_waited_for(rig2: Rig) -> None:
    # Arrange
    await rig2.send(make_signal("a"), make_watermark("a", T0))
    # Act
    with capture_logs() as logs:
        await rig2.send(_quarantine("b"))
    # Assert
    assert len(rig2.opportunities) == 1
    assert rig2.watermarks == [T0]
    assert rig2.stage.live_agents == ("a",)
    assert rig2.stage.stats.quarantined_agents == ["b"]
    assert any(e["event"].startswith("agent quarantined") and e["agent"] == "b" for e in logs)


async def test_stage_when_signal_arrives_after_step_closed_then_counted_logged_not_blended(
    rig2: Rig,
) -> None:
    # Arrange
    await rig2.send(make_signal("a"), make_watermark("a", T0), make_watermark("b", T0))
    late = make_signal("b", ts=T0)
    # Act
    with capture_logs() as logs:
        await rig2.send(late)
    # Assert
    assert rig2.stage.stats.late_signals == 1
    assert rig2.stage.stats.late_by_agent == {"b": 1}
    assert rig2.stage.stats.signals == 2
    assert len(rig2.opportunities) == 1
    warnings = [e for e in logs if e["event"].startswith("late signal")]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["trace_id"] == late.trace_id


async def test_stage_when_steps_have_no_signals_then_watermark_still_advances(rig2: Rig) -> None:
    # Arrange / Act
    for i in range(3):
        await rig2.send(make_watermark("a", step(i)), make_watermark("b", step(i)))
    # Assert
    assert rig2.watermarks == [step(0), step(1), step(2)]
    assert rig2.opportunities == []


async def test_stage_when_watermark_jumps_then_every_buffered_step_closed_in_order(
    rig2: Rig,
) -> None:
    # Arrange
    await rig2.send(
        make_signal("a", "MSFT", ts=step(0)),
        make_signal("a", "AAPL", ts=step(1)),
        make_signal("b", "AAPL", ts=step(0)),
    )
    # Act
    await rig2.send(make_watermark("a", step(2)), make_watermark("b", step(2)))
    # Assert
    kinds = [
        (type(m).__name__, getattr(m, "symbol", None), m.ts_event)  # type: ignore[attr-defined]
        for m in rig2.received
    ]
    assert kinds == [
        ("Opportunity", "AAPL", step(0)),
        ("Opportunity", "MSFT", step(0)),
        ("Watermark", None, step(0)),
        ("Opportunity", "AAPL", step(1)),
        ("Watermark", None, step(1)),
        ("Watermark", None, step(2)),
    ]


async def test_stage_when_arrival_order_differs_then_identical_output() -> None:
    # Arrange
    symbols = ["MSFT", "BRK.B", "AAPL", "NVDA"]
    signals = [
        make_signal(agent, sym, mu=0.001 * (i + 1), sigma=0.01 + 0.001 * j)
        for i, sym in enumerate(symbols)
        for j, agent in enumerate(["a", "b"])
    ]
    outputs = []
    for ordering in (signals, list(reversed(signals))):
        rig = Rig(["a", "b"], seed=42)
        await rig.stage.start()
        # Act
        await rig.send(*ordering, make_watermark("b", T0), make_watermark("a", T0))
        await rig.stage.stop()
        outputs.append([m.to_json() for m in rig.received])  # type: ignore[attr-defined]
    # Assert
    assert outputs[0] == outputs[1]
    rig_symbols = [Opportunity.from_json(j).symbol for j in outputs[0][:-1]]
    assert rig_symbols == sorted(symbols)


async def test_stage_when_all_agents_quarantined_then_follows_source_watermarks(
    rig2: Rig,
) -> None:
    # Arrange
    await rig2.send(make_signal("a", ts=step(1)))
    await rig2.send(_quarantine("a"), _quarantine("b"))
    # Act
    await rig2.send(make_watermark("replay", step(0)), source=True)
    await rig2.send(make_watermark("replay", step(1)), source=True)
    # Assert
    assert rig2.watermarks == [step(0), step(1)]
    assert [o.ts_event for o in rig2.opportunities] == [step(1)]  # buffered before quarantine


async def test_stage_when_agents_live_then_source_watermarks_do_not_close_steps(
    rig2: Rig,
) -> None:
    # Arrange / Act
    await rig2.send(make_signal("a"), make_watermark("replay", T0), source=True)
    # Assert
    assert rig2.received == []


async def test_stage_when_agents_ahead_of_the_sources_then_steps_close_as_sources_publish() -> None:
    # Arrange: both agents (fed ahead, in a worker process) are done with steps 0-2 before the
    # replay has published anything; a foreign source watermark (e.g. bridged from Kafka)
    # must not stand in for the replay's own
    rig = Rig(["a", "b"], sources=["replay", "rates"])
    await rig.stage.start()
    await rig.send(
        make_signal("a", ts=step(1)),
        make_signal("b", ts=step(1)),
        make_watermark("a", step(2)),
        make_watermark("b", step(2)),
    )
    await rig.send(make_watermark("elsewhere", step(2)), source=True)
    closed_before_any = list(rig.watermarks)
    await rig.send(make_watermark("replay", step(0)), make_watermark("rates", step(0)), source=True)
    closed_after_step_0 = list(rig.watermarks)
    # Act
    await rig.send(make_watermark("replay", step(1)), make_watermark("rates", step(1)), source=True)
    await rig.stage.stop()
    # Assert: each step closes once every replay source has published it, not before
    assert closed_before_any == []
    assert closed_after_step_0 == [step(0)]
    assert rig.watermarks == [step(0), step(1)]
    assert [o.ts_event for o in rig.opportunities] == [step(1)]


async def test_stage_when_sources_given_and_agents_behind_then_agents_decide() -> None:
    # Arrange: the in-process case: the sources are ahead of the agents, the cap never binds
    rig = Rig(["a", "b"], sources=["replay"])
    await rig.stage.start()
    await rig.send(make_watermark("replay", step(1)), source=True)
    # Act
    await rig.send(make_watermark("a", step(0)), make_watermark("b", step(0)))
    await rig.stage.stop()
    # Assert
    assert rig.watermarks == [step(0)]


async def test_stage_when_fewer_than_min_signals_then_symbol_skipped_step_closed() -> None:
    # Arrange
    rig = Rig(["a", "b"], min_signals=2)
    await rig.stage.start()
    # Act
    await rig.send(
        make_signal("a", "AAPL"),
        make_signal("b", "AAPL"),
        make_signal("a", "MSFT"),
        make_watermark("a", T0),
        make_watermark("b", T0),
    )
    await rig.stage.stop()
    # Assert
    assert [o.symbol for o in rig.opportunities] == ["AAPL"]
    assert rig.stage.stats.below_min_signals == 1
    assert rig.watermarks == [T0]


async def test_stage_when_agent_sends_twice_for_same_step_then_later_signal_counts(
    rig2: Rig,
) -> None:
    # Arrange
    first = make_signal("a", mu=0.01)
    second = make_signal("a", mu=0.002)
    # Act
    await rig2.send(first, second, make_watermark("a", T0), make_watermark("b", T0))
    # Assert
    (opp,) = rig2.opportunities
    assert opp.mu == pytest.approx(0.002)
    assert [c.signal_trace_id for c in opp.contributions] == [second.trace_id]
    assert rig2.stage.stats.superseded_signals == 1


async def test_stage_when_policy_raises_then_logged_counted_and_watermark_advances() -> None:
    # Arrange
    class Exploding(PrecisionBlender):
        def blend(self, symbol: str, signals: Sequence[Signal], **kw: object) -> None:
            raise RuntimeError("bad model")

    rig = Rig(["a"])
    rig.stage._policy = Exploding(Horizon.D1)
    await rig.stage.start()
    # Act
    with capture_logs() as logs:
        await rig.send(make_signal("a"), make_watermark("a", T0))
    await rig.stage.stop()
    # Assert
    assert rig.stage.stats.blend_errors == 1
    assert rig.watermarks == [T0]
    assert any(e["event"].startswith("blend policy raised") for e in logs)


async def test_stop_when_steps_still_open_then_warns_with_their_count() -> None:
    # Arrange
    rig = Rig(["a"])
    await rig.stage.start()
    await rig.send(make_signal("a", ts=step(3)))
    # Act
    with capture_logs() as logs:
        await rig.stage.stop()
    # Assert
    (warning,) = [e for e in logs if e["event"].startswith("blender stopped with open steps")]
    assert warning["signals"] == 1
    assert rig.stage.open_steps == (step(3),)
