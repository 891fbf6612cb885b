"""Runs agents: feeds them events, publishes their signals, forwards watermarks, keeps them alive.

One task per agent reads that agent's single bounded mailbox (its subscriptions plus every
source watermark, in publish order) and calls the matching hook. Around each hook it:

- publishes the signals the hook emitted, then, on a watermark, the agent's own watermark, so a
  downstream stage that sees `watermark.agent.<name>` at t knows every signal of that agent up to
  t is already on the bus;
- catches every exception: logged with agent, event type, symbol and trace id, counted, and the
  failing event's partial output discarded; the agent then backs off exponentially (the event
  is not retried: a deterministic failure would just repeat) and continues with the next event;
- quarantines the agent once `max_failures` failures fall within the last `failure_window`
  handled events. The window counts events, not seconds, so a replay quarantines at the same
  point however fast it runs. A quarantined agent's mailbox is closed (it can never block a
  publisher) and an `AgentStatus` tells the blender to stop waiting for it;
- measures the hook against its time budget, and a watchdog reports a hook that is still
  running past its budget (a hung hook is reported while it hangs, not only when it returns).

"Restart" keeps the agent instance: its indicator state survives a bad event. An agent whose
`on_start` fails is retried with the same backoff and quarantine rules.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

from config import AgentConfig, SupervisorConfig
from config.enums import OverflowPolicy
from contracts import (
    AgentState,
    AgentStatus,
    Bar,
    Contract,
    IdGenerator,
    MacroObservation,
    SocialPost,
    Watermark,
    topics,
)
from engine.agent import Agent
from engine.bus import MessageBus, Subscription, SubscriptionClosed
from engine.checked_contracts import CheckedWatermarks
from engine.clock import Clock
from engine.lifecycle import AsyncService
from engine.telemetry.logging import Logger, get_logger
from engine.telemetry.observe import LatencyObserver
from engine.telemetry.tracing import ChainTracer

StateListener = Callable[[str, AgentState, str], None]
"""Called with (agent name, new state, reason) on every state change of an agent."""


@dataclass(frozen=True, slots=True)
class SupervisionPolicy:
    """The supervision settings for one agent (engine defaults plus the agent's overrides)."""

    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0
    backoff_multiplier: float = 2.0
    max_failures: int = 5
    failure_window: int = 100
    handler_budget_s: float = 0.25
    stop_timeout_s: float = 5.0
    start_timeout_s: float = 30.0

    @classmethod
    def from_config(cls, sup: SupervisorConfig, agent: AgentConfig | None = None) -> Self:
        budget_ms = sup.handler_budget_ms
        if agent is not None and agent.handler_budget_ms is not None:
            budget_ms = agent.handler_budget_ms
        return cls(
            backoff_initial_s=sup.backoff_initial_s,
            backoff_max_s=sup.backoff_max_s,
            backoff_multiplier=sup.backoff_multiplier,
            max_failures=sup.max_failures,
            failure_window=sup.failure_window,
            handler_budget_s=budget_ms / 1000.0,
            stop_timeout_s=sup.stop_timeout_s,
            start_timeout_s=sup.start_timeout_s,
        )


@dataclass(slots=True)
class AgentStats:
    """Counters of one agent; read by telemetry, tests and the run summary."""

    handled: int = 0
    failed: int = 0
    restarts: int = 0
    overruns: int = 0
    signals: int = 0
    discarded_signals: int = 0
    unexpected_messages: int = 0
    watermarks_forwarded: int = 0
    quarantines: int = 0
    last_error: str | None = field(default=None)


@dataclass(frozen=True, slots=True)
class MailboxSpec:
    capacity: int | None = None
    policy: OverflowPolicy = OverflowPolicy.BLOCK


def _conflation_key(topic: str, message: object) -> Hashable:
    """Conflate data per topic, never watermarks.

    The bus conflates in place (a newer message takes the older one's queue position). A later
    watermark moved forward that way could overtake data published before it, and the agent
    would then claim a step done before handling it; unique keys keep every watermark in order.
    """
    if isinstance(message, Watermark):
        return ("watermark", id(message))
    return topic


class AgentRunner:
    """Supervises one agent. Created and driven by :class:`AgentSupervisor`."""

    @classmethod
    def from_config(
        cls,
        agent: Agent[Any],
        agent_cfg: AgentConfig,
        *,
        supervisor: SupervisorConfig,
        default_policy: OverflowPolicy,
        sources: Sequence[str],
        bus: MessageBus,
        clock: Clock,
        ids: IdGenerator,
        handler_latency: LatencyObserver | None = None,
        chain: ChainTracer | None = None,
        on_state: StateListener | None = None,
    ) -> Self:
        """The runner of `agent` as its config says: supervision policy, mailbox (the bus'
        `default_policy` unless the agent sets one), subscriptions, and the `sources` whose
        watermarks make a step (the engine and the remote-agent host build runners alike)."""
        return cls(
            agent,
            bus=bus,
            clock=clock,
            ids=ids,
            log=get_logger("supervisor"),
            policy=SupervisionPolicy.from_config(supervisor, agent_cfg),
            mailbox=MailboxSpec(
                capacity=agent_cfg.mailbox_capacity,
                policy=agent_cfg.mailbox_policy or default_policy,
            ),
            patterns=agent_cfg.subscriptions,
            expected_sources=sources,
            handler_latency=handler_latency,
            chain=chain,
            on_state=on_state,
        )

    def __init__(
        self,
        agent: Agent[Any],
        *,
        bus: MessageBus,
        clock: Clock,
        ids: IdGenerator,
        log: Logger,
        policy: SupervisionPolicy,
        mailbox: MailboxSpec = MailboxSpec(),
        patterns: Sequence[str] | None = None,
        expected_sources: Sequence[str] = (),
        handler_latency: LatencyObserver | None = None,
        chain: ChainTracer | None = None,
        on_state: StateListener | None = None,
    ) -> None:
        self.agent = agent
        self.name = agent.name
        self.policy = policy
        self.stats = AgentStats()
        self.state = AgentState.STARTING
        self._bus = bus
        self._clock = clock
        self._ids = ids
        self._log = log.bind(agent=agent.name)
        self._mailbox_spec = mailbox
        self._patterns = tuple(patterns if patterns is not None else agent.subscriptions())
        self._expected_sources = frozenset(expected_sources)
        self._subscription: Subscription | None = None
        self._outcomes = 0
        """Number of outcomes so far (handled events and start attempts)."""
        self._failure_marks: deque[int] = deque()
        """Outcome numbers of the failures still inside the window."""
        self._signal_topics: dict[str, str] = {}
        self._backoff_s = policy.backoff_initial_s
        self._source_watermarks: dict[str, datetime] = {}
        self._forwarded: datetime | None = None
        self._busy_since: float | None = None
        self._busy_event: Contract | None = None
        self._overrun_reported = False
        self._handler_latency = handler_latency
        self._watermarks = CheckedWatermarks(self.name)
        self._chain = chain if chain is not None and chain.recording else None
        self._on_state = on_state
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self._handlers: dict[type, Callable[[Any], Awaitable[None]]] = {
            Bar: agent.on_bar,
            MacroObservation: agent.on_macro,
            SocialPost: agent.on_post,
        }
        self._step_end = (
            agent.on_step_end if type(agent).on_step_end is not Agent.on_step_end else None
        )

    @property
    def patterns(self) -> tuple[str, ...]:
        return self._patterns

    @property
    def subscription(self) -> Subscription | None:
        return self._subscription

    def subscribe(self) -> None:
        """Open the mailbox before any source publishes, so the agent misses nothing."""
        policy = self._mailbox_spec.policy
        self._subscription = self._bus.subscribe(
            [*self._patterns, topics.ALL_SOURCE_WATERMARKS],
            name=f"agent.{self.name}",
            capacity=self._mailbox_spec.capacity,
            policy=policy,
            key=_conflation_key if policy is OverflowPolicy.CONFLATE else None,
        )

    async def run(self) -> None:
        """Task body: start the agent (with retries), then handle events until stopped."""
        try:
            if await self._start_agent():
                await self._loop()
        finally:
            self.started.set()
            await self._shutdown()
            self.finished.set()

    def request_stop(self) -> None:
        """Stop after the events already in the mailbox have been handled."""
        if self._subscription is not None:
            self._subscription.close()

    # -- internals -----------------------------------------------------------------------------

    async def _start_agent(self) -> bool:
        while True:
            try:
                async with asyncio.timeout(self.policy.start_timeout_s):
                    await self.agent.on_start()
            except Exception as exc:
                self._record_failure(exc, None, hook="on_start")
                if self.state is AgentState.QUARANTINED:
                    return False
                await self._back_off()
                continue
            await self._set_state(AgentState.RUNNING, "started")
            self.started.set()
            return True

    async def _loop(self) -> None:
        sub = self._subscription
        assert sub is not None, "subscribe() must be called before run()"
        # The per-event path is written out here rather than split into helpers: it runs for
        # every event of every agent (~500k times in the default replay), and each avoided
        # call is measurable. The slow paths (watermarks, failures, overruns) are methods.
        agent = self.agent
        handlers = self._handlers
        monotonic = self._clock.monotonic
        budget = self.policy.handler_budget_s
        stats = self.stats
        initial_backoff = self.policy.backoff_initial_s
        latency = self._handler_latency
        while True:
            try:
                batch = await sub.get_batch(64)
            except SubscriptionClosed:
                return
            for topic, message in batch:
                handler = handlers.get(type(message))
                if handler is None:
                    if isinstance(message, Watermark):
                        await self._on_source_watermark(message)
                        if self.state is AgentState.QUARANTINED:  # on_step_end failed for good
                            return
                    else:
                        self._on_unexpected(topic, message)
                    continue
                assert isinstance(message, Contract)
                agent._current = message
                self._busy_event = message
                self._overrun_reported = False
                started = self._busy_since = monotonic()
                try:
                    await handler(message)
                except Exception as exc:
                    self._busy_since = None
                    await self._on_hook_failure(exc, message, handler.__name__)
                    if self.state is AgentState.QUARANTINED:
                        return
                    continue
                self._busy_since = None
                agent._current = None
                stats.handled += 1
                self._outcomes += 1
                self._backoff_s = initial_backoff
                elapsed = monotonic() - started
                if latency is not None:
                    latency.observe(elapsed)
                if elapsed > budget and not self._overrun_reported:
                    self._report_overrun(message, elapsed, still_running=False)
                if agent._outbox:
                    await self._publish_outbox()

    def _on_unexpected(self, topic: str, message: object) -> None:
        self.stats.unexpected_messages += 1
        self._log.warning(
            "agent mailbox received an unexpected message; ignored",
            topic=topic,
            message_type=type(message).__name__,
        )

    async def _on_hook_failure(self, exc: Exception, message: Contract, hook: str) -> None:
        agent = self.agent
        agent._set_current(None)
        discarded = agent._take_outbox()
        self.stats.discarded_signals += len(discarded)
        self.stats.handled += 1
        self._record_failure(exc, message, hook=hook, discarded=len(discarded))
        if self.state is not AgentState.QUARANTINED:
            await self._back_off()

    async def _publish_outbox(self) -> None:
        signals = self.agent._take_outbox()
        if not signals:
            return
        self.stats.signals += len(signals)
        if self._chain is not None:
            for sig in signals:
                self._chain.signal(sig)
        cache = self._signal_topics
        if len(signals) == 1:
            sig = signals[0]
            topic = cache.get(sig.symbol)
            if topic is None:
                topic = cache[sig.symbol] = topics.signal(sig.agent, sig.symbol)
            await self._bus.publish(topic, sig)
        else:
            await self._bus.publish_batch([(topics.signal(s.agent, s.symbol), s) for s in signals])

    async def _on_source_watermark(self, wm: Watermark) -> None:
        self._source_watermarks[wm.origin] = wm.ts_event
        if self._expected_sources:
            if not self._expected_sources.issubset(self._source_watermarks):
                return
            marks = self._source_watermarks
            ts = min([marks[s] for s in self._expected_sources])
        else:
            ts = wm.ts_event
        if self._forwarded is not None and ts <= self._forwarded:
            return
        step_end = self._step_end
        if step_end is not None:
            agent = self.agent
            agent._current = wm
            self._busy_event = wm
            self._overrun_reported = False
            self._busy_since = self._clock.monotonic()  # the overrun watchdog sees this hook too
            try:
                await step_end(ts)
            except Exception as exc:
                self._busy_since = None
                await self._on_hook_failure(exc, wm, "on_step_end")
                if self.state is AgentState.QUARANTINED:
                    return
            else:
                self._busy_since = None
                agent._current = None
                if agent._outbox:
                    await self._publish_outbox()
        self._forwarded = ts
        out = self._watermarks.build(wm.trace_id, ts, self._clock.now())
        await self._bus.publish(topics.agent_watermark(self.name), out)
        self.stats.watermarks_forwarded += 1

    @property
    def failures_in_window(self) -> int:
        """Failures among the last `failure_window` outcomes (handled events, start attempts)."""
        self._expire_failures()
        return len(self._failure_marks)

    def _expire_failures(self) -> None:
        oldest_kept = self._outcomes - self.policy.failure_window
        marks = self._failure_marks
        while marks and marks[0] < oldest_kept:
            marks.popleft()

    def _record_failure(
        self, exc: BaseException, event: Contract | None, *, hook: str, discarded: int = 0
    ) -> None:
        # Outcomes are numbered; a failure remembers its number, so a success costs one
        # increment and the window is counted only when something fails.
        self._failure_marks.append(self._outcomes)
        self._outcomes += 1
        self._expire_failures()
        failures = len(self._failure_marks)
        self.stats.failed += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self._log.error(
            "agent hook raised",
            hook=hook,
            event_type=type(event).__name__ if event is not None else None,
            symbol=getattr(event, "symbol", None),
            trace_id=getattr(event, "trace_id", None),
            ts_event=event.ts_event.isoformat() if event is not None else None,
            failures_in_window=failures,
            max_failures=self.policy.max_failures,
            discarded_signals=discarded,
            exc_info=exc,
        )
        if failures >= self.policy.max_failures:
            self.state = AgentState.QUARANTINED
            self.stats.quarantines += 1

    async def _back_off(self) -> None:
        await self._set_state(AgentState.BACKING_OFF, self.stats.last_error or "")
        delay = self._backoff_s
        self._backoff_s = min(
            self._backoff_s * self.policy.backoff_multiplier, self.policy.backoff_max_s
        )
        self._log.warning("agent restarting after backoff", backoff_s=delay)
        await asyncio.sleep(delay)
        self.stats.restarts += 1
        await self._set_state(AgentState.RUNNING, "restarted")

    def _report_overrun(
        self, event: Contract | None, elapsed: float, *, still_running: bool
    ) -> None:
        self._overrun_reported = True
        self.stats.overruns += 1
        self._log.warning(
            "agent hook overran its time budget",
            still_running=still_running,
            elapsed_ms=round(elapsed * 1000.0, 3),
            budget_ms=round(self.policy.handler_budget_s * 1000.0, 3),
            event_type=type(event).__name__ if event is not None else None,
            symbol=getattr(event, "symbol", None),
            trace_id=getattr(event, "trace_id", None),
        )

    def check_overrun(self, now: float) -> None:
        """Called by the supervisor's watchdog: report a hook still running past its budget."""
        since = self._busy_since
        if since is None or self._overrun_reported:
            return
        elapsed = now - since
        if elapsed > self.policy.handler_budget_s:
            self._report_overrun(self._busy_event, elapsed, still_running=True)

    async def _set_state(self, state: AgentState, reason: str) -> None:
        if state is self.state and state is not AgentState.QUARANTINED:
            return
        self.state = state
        if self._on_state is not None:
            self._on_state(self.name, state, reason)
        status = AgentStatus(
            trace_id=self._ids.trace_id(),
            ts_event=self._clock.now(),
            ts_init=self._clock.now(),
            agent=self.name,
            state=state,
            reason=reason[:2000],
            failures=self.stats.failed,
        )
        # Awaited, not fire-and-forget: the blender must learn of a quarantine, so a full
        # status mailbox applies backpressure rather than losing the message.
        await self._bus.publish(topics.agent_status(self.name), status)

    async def _shutdown(self) -> None:
        quarantined = self.state is AgentState.QUARANTINED
        if self._subscription is not None:
            self._bus.unsubscribe(self._subscription)
        if quarantined:
            self._log.error(
                "agent quarantined",
                failures_in_window=self.failures_in_window,
                failure_window=self.policy.failure_window,
                last_error=self.stats.last_error,
            )
            await self._set_state(AgentState.QUARANTINED, self.stats.last_error or "")
        try:
            async with asyncio.timeout(self.policy.stop_timeout_s):
                await self.agent.on_stop()
        except Exception as exc:
            self._log.error("agent on_stop raised", exc_info=exc)
        if not quarantined:
            await self._set_state(AgentState.STOPPED, "stopped")


class AgentSupervisor(AsyncService):
    """Owns the runners of all agents; an async context manager with explicit start/stop."""

    def __init__(
        self,
        runners: Sequence[AgentRunner],
        *,
        clock: Clock,
        log: Logger,
        on_crash: Callable[[BaseException], None] | None = None,
    ) -> None:
        names = [r.name for r in runners]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate agent names: {', '.join(duplicates)}")
        self._runners = {r.name: r for r in runners}
        self._on_crash = on_crash
        self._clock = clock
        self._log = log
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def runners(self) -> dict[str, AgentRunner]:
        return dict(self._runners)

    def live_agents(self) -> list[str]:
        return [n for n, r in self._runners.items() if r.state is not AgentState.QUARANTINED]

    async def start(self) -> None:
        for runner in self._runners.values():
            runner.subscribe()
        for name, runner in self._runners.items():
            task = asyncio.create_task(runner.run(), name=f"agent:{name}")
            task.add_done_callback(self._report_crash)
            self._tasks[name] = task
        await asyncio.gather(*(r.started.wait() for r in self._runners.values()))
        if self._runners:
            self._watchdog = asyncio.create_task(self._watch(), name="agent-watchdog")
        self._log.info("agents started", agents=self.live_agents())

    async def stop(self) -> None:
        for runner in self._runners.values():
            runner.request_stop()
        timeout = max((r.policy.stop_timeout_s for r in self._runners.values()), default=1.0)
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks.values(), timeout=timeout * 2)
            for task in pending:
                self._log.error("agent did not stop in time; cancelling", task=task.get_name())
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        self._tasks.clear()
        self._log.info("agents stopped")

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        # Hook exceptions are handled inside the runner; this catches a fault of the runner
        # itself (e.g. the bus rejecting a publish) the moment it happens, not only at stop.
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.error("agent task crashed", task=task.get_name(), exc_info=exc)
            if self._on_crash is not None:
                # A runner fault is an engine bug, not a plugin failure: the blender would wait
                # for that agent's watermark forever, so the run fails loudly instead.
                self._on_crash(exc)

    async def _watch(self) -> None:
        interval = min(r.policy.handler_budget_s for r in self._runners.values()) / 2
        interval = min(max(interval, 0.01), 1.0)
        while True:
            await asyncio.sleep(interval)
            now = self._clock.monotonic()
            for runner in self._runners.values():
                runner.check_overrun(now)
