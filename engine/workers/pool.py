"""`AgentWorkerPool`: the engine's side of its local agent worker processes.

Why it exists: the engine's event loop is one core, and on the default replay most of that core
goes to the agents' per-bar Python. Agents configured with ``worker = k`` run in child process
k instead (`engine.workers.host`), in parallel with the engine's own agents and stages, and the
run makes the same decisions: the children run the engine's own classes with the same ids, and
the blender closes a step only when every agent's watermark, local or not, has passed it.

How: the engine's replay hands each step (bars, macro observations, posts, source watermarks,
exactly the batch it publishes) to `feed`, up to `FEED_LOOKAHEAD_STEPS` steps before it
publishes it, and the pool writes it to every worker as one frame. A reader per worker
publishes what its agents published (signals, agent watermarks, statuses; checked to be its
own agents' and nothing else) on the engine's bus, and keeps the counters and handler-time
histograms the worker reports, so metrics, the run summary and the benchmarks see worker
agents like local ones.

Failure: a worker that exits, closes its output or sends an undecodable frame is lost; each of
its agents that was not already stopped is quarantined (health FAULTED with the reason, an
`AgentStatus` QUARANTINED on the bus so the blender stops waiting for it), and the run goes on,
as with a local agent that failed for good. A worker that cannot start fails the engine's start
with every problem it reported.

Trade-offs: a worker keeps its own regime model and a private in-memory feature store (see
`engine.agent_host`), also when the engine uses Redis: fed ahead, it would otherwise put values
from the engine's future in front of the engine's readers. So the features its agents publish
stay in the worker (no stage reads agents' features); their drift statistics come back in the
worker's reports. Trace spans of worker agents' signals are recorded when the signals reach
the engine. Workers get the replay's data only: market data that other publishers put on the
engine's bus (e.g. a Kafka ingress route of bars) reaches only the agents in the engine's own
loop. The feed costs the engine a pickle per step and the results an unpickle per frame, a few
microseconds per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from config import EngineConfig
from contracts import AgentState, AgentStatus, Contract, IdGenerator, Signal, topics
from engine.agent_host import agent_output_check, quarantined_status
from engine.bus import MessageBus
from engine.clock import Clock
from engine.features.drift import DriftResult
from engine.lifecycle import AsyncService
from engine.supervisor import AgentStats, StateListener
from engine.telemetry.logging import Logger
from engine.telemetry.metrics import LatencyHistogram
from engine.telemetry.tracing import ChainTracer
from engine.workers.frames import (
    Failed,
    Feed,
    FrameError,
    Output,
    Ready,
    Report,
    Start,
    Stop,
    Stopped,
    Sync,
    encode,
    read_from_worker,
)

FEED_LOOKAHEAD_STEPS = 64
"""How many steps ahead of the engine's own replay the workers are fed. The replay is lock-step
(a step is published when the previous one went through the pipeline), so a worker fed only
at publication would idle while the engine blends and trades; fed ahead, it computes the next
steps meanwhile. Its signals wait in the blender, which blends a step only when every agent's
watermark has passed it and the replay has published it, so the decisions do not change."""

_ENGINE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
_START_MARGIN_S = 30.0
"""Time a worker may take to import the engine and the plugins, on top of the agents' own
start timeout."""


class WorkerStartError(Exception):
    """A worker could not start its agents; one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class WorkerAgent:
    """An agent in a worker as the engine knows it: its state and counters as last reported
    (the same `AgentStats` a local runner keeps)."""

    __slots__ = ("name", "state", "stats", "worker")

    def __init__(self, name: str, worker: int) -> None:
        self.name = name
        self.worker = worker
        self.state = AgentState.STARTING
        self.stats = AgentStats()


class _Worker:
    def __init__(self, number: int, agents: Sequence[str]) -> None:
        self.number = number
        self.agents = tuple(agents)
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopped = asyncio.Event()
        self.lost = False
        self.rejected = 0
        self.syncs_sent = 0
        self.synced = 0
        self.stop_sent = False
        self.progress = asyncio.Event()
        """Set when a `Report` answers a `Sync`, or when the worker is lost."""


class AgentWorkerPool(AsyncService):
    """Starts, feeds, hears and stops the engine's agent worker processes (module docstring)."""

    def __init__(
        self,
        config: EngineConfig,
        placement: Mapping[int, Sequence[str]],
        *,
        bus: MessageBus,
        clock: Clock,
        ids: IdGenerator,
        log: Logger,
        handler_latency: Callable[[str], LatencyHistogram | None] | None = None,
        on_state: StateListener | None = None,
        chain: ChainTracer | None = None,
    ) -> None:
        self.config = config
        self._chain = chain if chain is not None and chain.recording else None
        self._bus = bus
        self._clock = clock
        self._ids = ids
        self._log = log.bind(subsystem="agent-workers")
        self._handler_latency = handler_latency
        self._on_state = on_state
        self._workers = [_Worker(n, names) for n, names in sorted(placement.items()) if names]
        self.agents: dict[str, WorkerAgent] = {
            name: WorkerAgent(name, w.number) for w in self._workers for name in w.agents
        }
        """Every agent in a worker, by name."""
        self.drift_results: dict[tuple[str, str], DriftResult] = {}
        """The latest drift statistics of the features the workers' agents publish."""

    @property
    def lookahead(self) -> int:
        """Steps the replay may feed the workers ahead of publishing them."""
        return FEED_LOOKAHEAD_STEPS

    @property
    def rejected(self) -> int:
        """Messages from workers refused (not one of the worker's own agents' outputs)."""
        return sum(w.rejected for w in self._workers)

    def exit_codes(self) -> dict[int, int | None]:
        """Each worker's exit code (None while its process runs or before it started)."""
        return {w.number: w.process.returncode if w.process else None for w in self._workers}

    def live_agents(self) -> list[str]:
        return [n for n, a in self.agents.items() if a.state is not AgentState.QUARANTINED]

    # -- start -------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._workers:
            return
        results = await asyncio.gather(
            *(self._start_worker(w) for w in self._workers), return_exceptions=True
        )
        problems: list[str] = []
        for w, result in zip(self._workers, results, strict=True):
            if isinstance(result, BaseException):
                problems.append(f"agent worker {w.number}: {type(result).__name__}: {result}")
            else:
                problems += [f"agent worker {w.number}: {p}" for p in result]
        if problems:
            await self._kill_all()
            raise WorkerStartError(problems)
        for w in self._workers:
            w.task = asyncio.create_task(self._read(w), name=f"agent-worker-{w.number}-reader")
        self._log.info(
            "agent workers started",
            workers={w.number: list(w.agents) for w in self._workers},
        )

    async def _start_worker(self, w: _Worker) -> list[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_ENGINE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        w.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engine.workers",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            # Its own session: a Ctrl-C at the terminal reaches the engine, which stops the
            # worker in order (Stop, the agents' on_stop, a last report), not both at once.
            start_new_session=True,
        )
        assert w.process.stdin is not None
        assert w.process.stdout is not None
        w.writer = w.process.stdin
        w.reader = w.process.stdout
        start = Start(
            worker=w.number,
            config=self.config,
            agents=w.agents,
            sys_path=tuple(sys.path),
        )
        w.writer.write(encode(start))
        await w.writer.drain()
        sup = self.config.supervisor
        # The agents' start as the supervisor runs it: up to max_failures attempts, each with
        # its own timeout and a back-off (an agent that never starts is quarantined, not fatal).
        timeout = sup.max_failures * (sup.start_timeout_s + sup.backoff_max_s) + _START_MARGIN_S
        try:
            async with asyncio.timeout(timeout):
                frame = await read_from_worker(w.reader)
        except TimeoutError:
            return [f"did not start its agents within {timeout:g} s"]
        except FrameError as exc:
            return [f"sent a corrupt frame while starting: {exc}"]
        if isinstance(frame, Ready):
            return []
        if isinstance(frame, Failed):
            return frame.problems
        if frame is not None:
            return [f"sent {type(frame).__name__} before it was ready"]
        code = await w.process.wait()
        return [f"exited while starting (exit code {code}); see its log above"]

    # -- run ---------------------------------------------------------------------------------

    async def feed(self, _ts: datetime, batch: Sequence[tuple[str, object]]) -> None:
        """Send one step of the replay to every live worker (the replay calls this up to
        `FEED_LOOKAHEAD_STEPS` steps before it publishes the step on the engine's bus). Waits
        while a worker's pipe is full: a worker behind holds the replay, as a busy in-process
        agent would."""
        data = encode(Feed(list(batch)))
        live = [w for w in self._workers if not w.lost and w.writer is not None]
        for w in live:
            assert w.writer is not None
            w.writer.write(data)
        for w in live:
            assert w.writer is not None
            try:
                await w.writer.drain()
            except (ConnectionError, OSError) as exc:
                await self._lose_pipe(w, exc)

    async def sync(self, timeout_s: float = 30.0) -> None:
        """Wait until every live worker has reported its agents' counters as of every step fed
        so far (the engine calls it when its replay completes, so the run's metrics are
        complete before anything is stopped). A worker that does not answer within
        `timeout_s` is logged and left as it is: `stop` deals with it."""
        await asyncio.gather(
            *(self._sync(w, timeout_s) for w in self._workers if not w.lost and w.writer)
        )

    async def _sync(self, w: _Worker, timeout_s: float) -> None:
        assert w.writer is not None
        w.syncs_sent += 1
        try:
            async with asyncio.timeout(timeout_s):
                w.writer.write(encode(Sync()))
                await w.writer.drain()
                while not w.lost and w.synced < w.syncs_sent:
                    w.progress.clear()
                    await w.progress.wait()
        except TimeoutError:
            self._log.error(
                "agent worker did not report in time", worker=w.number, timeout_s=timeout_s
            )
        except (ConnectionError, OSError) as exc:
            await self._lose_pipe(w, exc)

    async def _read(self, w: _Worker) -> None:
        assert w.reader is not None
        check = agent_output_check(w.agents)
        while True:
            try:
                frame = await read_from_worker(w.reader)
                if frame is None:
                    if not w.stopped.is_set():
                        await self._lose(w, await self._exit_reason(w, "its output closed"))
                    return
                if w.lost:
                    continue  # read to the end, but nothing of a lost worker counts any more
                if isinstance(frame, Output):
                    await self._publish(w, frame.items, check)
                elif isinstance(frame, Report):
                    self._apply(frame)
                    if frame.syncs > w.synced:
                        w.synced = frame.syncs
                        w.progress.set()
                elif isinstance(frame, Stopped) and w.stop_sent:
                    w.stopped.set()
                elif isinstance(frame, Stopped):
                    await self._lose(w, "stopped although nobody asked it to")
                elif isinstance(frame, Failed):  # its last frame: it exits by itself
                    await self._lose(w, "failed: " + "; ".join(frame.problems), kill=False)
                else:
                    await self._lose(w, f"sent {type(frame).__name__} while running")
            except FrameError as exc:
                await self._lose(w, f"sent a corrupt frame: {exc}")
                return
            except Exception as exc:  # a frame that decodes but cannot be used: same thing
                self._log.error("agent worker output unusable", worker=w.number, exc_info=exc)
                await self._lose(w, f"sent output that could not be used: {exc!r}")
                return

    async def _publish(
        self,
        w: _Worker,
        items: list[tuple[str, object]],
        check: Callable[[str, Contract], str | None],
    ) -> None:
        accepted: list[tuple[str, object]] = []
        chain = self._chain
        for topic, message in items:
            reason = (
                check(topic, message)
                if isinstance(message, Contract)
                else f"{type(message).__name__} is not a contract"
            )
            if reason is not None:
                w.rejected += 1
                self._log.error("message from an agent worker refused", reason=reason)
                continue
            if isinstance(message, AgentStatus):
                self._set_state(message.agent, message.state, message.reason)
            elif chain is not None and isinstance(message, Signal):
                chain.signal(message)  # as a local agent's runner records it
            accepted.append((topic, message))
        if accepted:
            await self._bus.publish_batch(accepted)

    def _apply(self, report: Report) -> None:
        for result in report.drift:
            self.drift_results[(result.feature_set, result.feature)] = result
        for name, rep in report.agents.items():
            agent = self.agents.get(name)
            if agent is None:
                continue
            agent.stats = rep.stats
            if agent.state is not AgentState.QUARANTINED:
                agent.state = rep.state
            hist = self._handler_latency(name) if self._handler_latency is not None else None
            if hist is not None and len(hist.counts) == len(rep.handler_counts):
                hist.counts[:] = rep.handler_counts
                hist.total = rep.handler_total_s

    def _set_state(self, name: str, state: AgentState, reason: str) -> None:
        agent = self.agents.get(name)
        if agent is None:
            return
        agent.state = state
        if self._on_state is not None:
            self._on_state(name, state, reason)

    async def _exit_reason(self, w: _Worker, symptom: str) -> str:
        """Why a worker's pipe ended: its exit code once it has exited (it normally has, or
        does within moments), else the symptom (`_lose` then kills it)."""
        proc = w.process
        if proc is None:
            return symptom
        try:
            code = await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            return f"broke its pipe ({symptom}) while still running"
        return f"exited unexpectedly (exit code {code})"

    async def _lose_pipe(self, w: _Worker, exc: BaseException) -> None:
        """Writing to the worker failed: lost, with its exit code when it has one."""
        await self._lose(w, await self._exit_reason(w, f"{type(exc).__name__}: {exc}"))

    async def _lose(self, w: _Worker, reason: str, *, kill: bool = True) -> None:
        """The worker is gone for this run: kill what is left of it (unless it is ending on its
        own) and quarantine each of its agents that was not stopped on the engine's request, so
        the blender stops waiting for them."""
        if w.lost:
            return
        w.lost = True
        w.stopped.set()
        w.progress.set()
        proc = w.process
        if kill and proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        self._log.error(
            "agent worker lost; its agents are quarantined", worker=w.number, reason=reason
        )
        for name in w.agents:
            agent = self.agents[name]
            # An agent the worker stopped on its own (it stops them all before it ends with
            # Failed) must be quarantined too, or the blender would wait for it forever.
            if agent.state is AgentState.QUARANTINED or (
                agent.state is AgentState.STOPPED and w.stop_sent
            ):
                continue
            why = f"agent worker {w.number} {reason}"
            self._set_state(name, AgentState.QUARANTINED, why)
            agent.stats.quarantines += 1
            agent.stats.last_error = why
            await self._bus.publish(
                topics.agent_status(name),
                quarantined_status(name, why, trace_id=self._ids.trace_id(), now=self._clock.now()),
            )

    # -- stop --------------------------------------------------------------------------------

    async def stop(self) -> None:
        # The worker's own supervisor may take 2x stop_timeout_s, then each on_stop up to one
        # more; before Stop it finishes the steps it was fed ahead.
        grace = self.config.supervisor.stop_timeout_s * 3 + 10.0
        await asyncio.gather(*(self._stop_worker(w, grace) for w in self._workers))
        self._log.info("agent workers stopped", rejected=self.rejected)

    async def _stop_worker(self, w: _Worker, grace_s: float) -> None:
        """Stop, then wait for the agents' on_stop and the last report; a worker that does not
        finish within `grace_s` (e.g. a hook that hangs) is killed and its agents quarantined."""
        proc = w.process
        if proc is None:
            return
        if not w.lost and w.writer is not None and proc.returncode is None:
            w.stop_sent = True
            try:
                async with asyncio.timeout(grace_s):
                    w.writer.write(encode(Stop()))
                    await w.writer.drain()
                    await w.stopped.wait()
            except TimeoutError:
                await self._lose(w, f"did not stop within {grace_s:g} s; killed")
            except (ConnectionError, OSError) as exc:
                await self._lose_pipe(w, exc)
        if w.writer is not None:
            with contextlib.suppress(Exception):
                w.writer.close()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if w.task is not None:
            # After Stopped (or a kill) only the end of the stream is left to read.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.task, 5.0)
            if not w.task.done():
                w.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w.task

    async def _kill_all(self) -> None:
        for w in self._workers:
            proc = w.process
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


__all__ = ["FEED_LOOKAHEAD_STEPS", "AgentWorkerPool", "WorkerAgent", "WorkerStartError"]
