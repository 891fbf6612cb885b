"""Remote agents: one agent in its own process, fed and heard over Kafka.

Why it exists: the first step of scale-out. An agent that is slow, crash-prone or needs its own
machine runs as ``tradeengine agent run --config engine.toml --agent NAME``; the engine treats
it exactly like a local agent, including step completion, and a replay with a remote agent
makes the same decisions as an all-in-process one (tested).

The protocol (both topics must have one partition: order is what makes it work):

- Engine -> feed topic: `RunControl` "started" (repeated until every remote agent joined),
  then per step the replay's batch exactly as the local bus carries it (bars, macro, posts, one
  source watermark per source), and finally `RunControl` "ended".
- Host: ignores the feed until a "started" that names its agent, then builds a fresh session
  (clock, feature store, regime model, the agent and its supervisor — the same classes the
  engine uses) and answers with an `AgentStatus` RUNNING carrying the run id. It reassembles
  each step (a step is complete when every source's watermark arrived), feeds the shared regime
  model first (as the engine's replay does), moves its replay clock to the step and publishes
  the step on its own bus. The agent runner publishes signals, then the agent's watermark.
- Host -> agents topic: signals, agent watermarks and statuses, each with the run id header.
  The engine accepts only its current run's records from its remote agents (others are
  dead-lettered as stale), and its blender closes a step when every agent's watermark —
  local or remote — has passed it.

Ids are derived from the seed and component name (`engine.app.derive_ids`), so the remote
agent's signals are byte-for-byte those the in-process agent would emit. A host that sees a new
run while in one abandons the old session (its outputs would be stale anyway) and joins the
new one; with ``once`` it exits after its first run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

from config import EngineConfig
from config.enums import OverflowPolicy
from contracts import (
    AgentState,
    AgentStatus,
    Contract,
    RunControl,
    Watermark,
    topics,
)
from engine.agent_host import SOURCE_WATERMARK_PREFIX, AgentHostSession
from engine.app import derive_ids
from engine.bus import MessageBus, Subscription, SubscriptionClosed
from engine.kafka.bridge import KafkaBridge, spool_path
from engine.kafka.egress import EgressRoute
from engine.kafka.ingress import IngressRoute
from engine.lifecycle import AsyncService
from engine.loader import LoadedAgent, load_agents
from engine.telemetry.logging import Logger, get_logger

FEED_PATTERNS = (
    topics.run_control(),
    topics.ALL_BARS,
    topics.ALL_MACRO,
    topics.ALL_POSTS,
    topics.ALL_SOURCE_WATERMARKS,
)
"""What the engine sends to remote agents (in one ordered feed)."""

FEED_TYPES = frozenset({"RunControl", "Bar", "MacroObservation", "SocialPost", "Watermark"})
REMOTE_OUTPUT_TYPES = frozenset({"Signal", "Watermark", "AgentStatus"})
"""What the engine accepts from remote agents."""


class RemoteAgentWatchdog:
    """Quarantines a remote agent that the run waits for but that has gone silent.

    A local agent cannot vanish without the supervisor noticing; a remote one can (its process
    or machine dies, its network goes). Without this the replay would wait for its watermark
    forever. "Waits for" = its latest watermark is behind the newest source watermark; "silent"
    = no watermark or status from it for `silence_timeout_s` (wall time: this guards a
    process, not the market). A Kafka outage or a single step longer than the timeout also
    quarantines it, and from then on the run's decisions differ from an in-process run's: set
    the timeout well above the slowest step.
    """

    def __init__(
        self,
        bus: MessageBus,
        agents: Sequence[str],
        *,
        silence_timeout_s: float,
        on_silent: Callable[[str, str], Awaitable[None]],
        log: Logger,
    ) -> None:
        self._bus = bus
        self._agents = list(agents)
        self._timeout = silence_timeout_s
        self._on_silent = on_silent
        self._log = log
        self.quarantined: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None

    async def start(self) -> None:
        patterns = [topics.ALL_SOURCE_WATERMARKS]
        for name in self._agents:
            patterns += [topics.agent_watermark(name), topics.agent_status(name)]
        # Only the newest marks matter: dropping old ones can never block a publisher.
        self._sub = self._bus.subscribe(
            patterns,
            name="engine.remote-watchdog",
            capacity=4096,
            policy=OverflowPolicy.DROP_OLDEST,
        )
        self._task = asyncio.create_task(self._run(self._sub), name="remote-agent-watchdog")

    async def stop(self) -> None:
        if self._sub is not None:
            self._bus.unsubscribe(self._sub)
            self._sub = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, sub: Subscription) -> None:
        loop = asyncio.get_running_loop()
        heard = dict.fromkeys(self._agents, loop.time())
        marks: dict[str, datetime] = {}
        newest_source: datetime | None = None
        live = set(self._agents)
        while live:
            try:
                async with asyncio.timeout(0.5):
                    batch = await sub.get_batch(1024)
            except TimeoutError:
                batch = []
            except SubscriptionClosed:
                return
            now = loop.time()
            for topic, message in batch:
                if isinstance(message, Watermark):
                    if topic.startswith(SOURCE_WATERMARK_PREFIX):
                        if newest_source is None or message.ts_event > newest_source:
                            newest_source = message.ts_event
                    else:
                        marks[message.origin] = message.ts_event
                        heard[message.origin] = now
                elif isinstance(message, AgentStatus):
                    heard[message.agent] = now
            for name in sorted(live):
                mark = marks.get(name)
                waiting = newest_source is not None and (mark is None or mark < newest_source)
                if waiting and now - heard[name] > self._timeout:
                    live.discard(name)
                    self.quarantined.append(name)
                    reason = (
                        f"remote agent silent for {now - heard[name]:.1f} s while the run waits "
                        f"for its watermark (last: {mark.isoformat() if mark else 'none'})"
                    )
                    self._log.error("remote agent lost; quarantined", agent=name, reason=reason)
                    await self._on_silent(name, reason)


class RemoteAgentError(Exception):
    """The host cannot run the named agent (config problems, one line each)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _Session(AgentHostSession):
    """One run of the agent (see `engine.agent_host`), under the run id it joined."""

    def __init__(self, host: RemoteAgentHost, run_id: str) -> None:
        super().__init__(
            host.config, [host.loaded], bus=host.bus, log=host.log, on_crash=host.crashed
        )
        self.run_id = run_id


class RemoteAgentHost(AsyncService):
    """Runs one configured agent against the engine's Kafka feed; see the module docstring."""

    def __init__(
        self,
        config: EngineConfig,
        agent: str,
        *,
        log: Logger | None = None,
        once: bool = False,
        spool_root: Path | None = None,
    ) -> None:
        self.config = config
        self.agent_name = agent
        self.log = log or get_logger("engine").bind(subsystem="remote-agent", agent=agent)
        self.once = once
        self._spool_root = spool_root or Path(config.engine.run_dir)
        self.bus = MessageBus(
            default_capacity=config.bus.default_capacity,
            default_policy=config.bus.default_policy,
        )
        self.loaded: LoadedAgent = self._load()
        self.bridge: KafkaBridge | None = None
        self.session: _Session | None = None
        self.runs_joined = 0
        self.ignored = 0
        """Feed messages outside a joined run (e.g. a run that started before this host)."""
        self._ids = derive_ids(config.engine.seed, f"{agent}.remote-host")
        self._done = asyncio.Event()
        self._stopping = False
        self.error: BaseException | None = None

    def _load(self) -> LoadedAgent:
        cfg = self.config
        problems: list[str] = []
        if not cfg.kafka.enabled:
            problems.append("kafka.enabled: must be true to run a remote agent")
        entry = next((a for a in cfg.agents if a.name == self.agent_name), None)
        if entry is None:
            known = ", ".join(a.name for a in cfg.agents) or "none"
            problems.append(f"agents: no agent named {self.agent_name!r} (configured: {known})")
        elif not entry.remote:
            problems.append(
                f"agents ({self.agent_name}): remote = false, so the engine runs it in process; "
                "set remote = true to run it here"
            )
        elif not entry.enabled:
            problems.append(f"agents ({self.agent_name}): enabled = false")
        if problems:
            raise RemoteAgentError(problems)
        assert entry is not None
        (loaded,) = load_agents([entry])
        return loaded

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        kafka = self.config.kafka
        remote = kafka.remote_agents
        name = self.agent_name
        out = remote.agents_topic
        self.bridge = KafkaBridge(
            kafka,
            bus=self.bus,
            log=self.log,
            egress_routes=[
                EgressRoute(topics.signals_of(name), out),
                EgressRoute(topics.agent_watermark(name), out),
                EgressRoute(topics.agent_status(name), out),
            ],
            ingress_routes=[IngressRoute(remote.feed_topic, types=FEED_TYPES)],
            spool_file=spool_path(self._spool_root, f"{kafka.client_id}.agent.{name}"),
            group_id=None,
            from_end=True,
            deliver=self._on_feed,
        )
        await self.bridge.start()
        if not await self.bridge.wait_ingress_ready(remote.ready_timeout_s):
            reason = self.bridge.reason
            await self.bridge.stop()
            raise RemoteAgentError(
                [
                    f"kafka: cannot consume {remote.feed_topic!r} within "
                    f"{remote.ready_timeout_s:g} s ({reason})"
                ]
            )
        self.log.info("remote agent waiting for a run", feed=remote.feed_topic, output=out)

    async def run(self) -> None:
        """Until stopped (or, with ``once``, until the first joined run ended)."""
        await self._done.wait()
        if self.error is not None:
            raise self.error

    def request_stop(self) -> None:
        self._done.set()

    def crashed(self, exc: BaseException) -> None:
        self.error = exc
        self._done.set()

    async def stop(self) -> None:
        self._stopping = True  # a "started" arriving now must not open a session
        if self.session is not None:
            await self.session.stop()
            self.session = None
        if self.bridge is not None:
            await self.bridge.stop()

    # -- the feed ----------------------------------------------------------------------------

    async def _on_feed(self, topic: str, message: Contract) -> None:
        if isinstance(message, RunControl):
            await self._on_control(message)
            return
        session = self.session
        if session is None:
            self.ignored += 1
            return
        await session.feed(topic, message)

    async def _on_control(self, control: RunControl) -> None:
        if self._stopping or self.agent_name not in control.agents:
            return  # a run that does not use this agent
        assert self.bridge is not None
        current = self.session
        if control.event == "ended":
            if current is not None and control.run_id == current.run_id:
                await current.stop()
                self.session = None
                await self.bridge.flush(timeout_s=30.0)
                self.log.info("run ended", run_id=control.run_id, steps=current.steps)
                if self.once:
                    self._done.set()
            return
        if current is not None and control.run_id == current.run_id:
            await self._announce(current)  # a repeated announcement: answer again
            return
        if current is not None:
            self.log.warning(
                "a new run started before the current one ended; abandoning it",
                abandoned=current.run_id,
                run_id=control.run_id,
            )
            await current.stop()
            self.session = None
        await self.bridge.flush(timeout_s=30.0)
        self.bridge.run_id = control.run_id
        session = _Session(self, control.run_id)
        await session.start()
        self.session = session
        self.runs_joined += 1
        self.log.info("joined run", run_id=control.run_id, engine=control.engine)
        await self._announce(session)

    async def _announce(self, session: _Session) -> None:
        now = session.clock.now()
        await self.bus.publish(
            topics.agent_status(self.agent_name),
            AgentStatus(
                trace_id=self._ids.trace_id(),
                ts_event=now,
                ts_init=now,
                agent=self.agent_name,
                state=AgentState.RUNNING,
                reason=f"joined run {session.run_id}",
            ),
        )


async def run_remote_agent(config: EngineConfig, agent: str, *, once: bool) -> int:
    """The ``tradeengine agent run`` command body: 0 on a clean end, 1 on a failure."""
    import signal

    host = RemoteAgentHost(config, agent, once=once)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, host.request_stop)
    try:
        try:
            await host.start()
            await host.run()
        finally:
            await host.stop()
    except RemoteAgentError:
        raise
    except Exception as exc:
        host.log.error("remote agent failed", exc_info=exc)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return 0


__all__ = [
    "FEED_PATTERNS",
    "FEED_TYPES",
    "REMOTE_OUTPUT_TYPES",
    "RemoteAgentError",
    "RemoteAgentHost",
    "RemoteAgentWatchdog",
    "run_remote_agent",
]
