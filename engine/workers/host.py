"""The child side of a local agent worker: ``python -m engine.workers`` hosts agents for the engine.

The engine starts this process itself (`engine.workers.pool`), writes frames to its stdin and
reads frames from its stdout (`engine.workers.frames`). The agents run in an `AgentHostSession`,
the same session the Kafka remote-agent host uses, so they emit exactly the signals they would
emit in the engine's own event loop. Everything they publish (signals, agent watermarks,
statuses) goes back in publish order; the engine's blender closes steps on their watermarks as
on any agent's.

Before it reads a frame, the process moves its frame channels off file descriptors 0 and 1 and
points stdout at stderr: a plugin that prints cannot corrupt the stream, and its output still
shows where the engine's logs go.

The worker ends when the engine sends `Stop` (after the agents' ``on_stop``, a final `Report`
and `Stopped`), or on its own with the reason in a `Failed` frame (a corrupt frame, an agent
runner that died), or when the engine is gone (its input ends, its output breaks, or, on Linux,
the engine's process dies): nobody would read the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence

from config import EngineConfig
from config.enums import OverflowPolicy
from config.models import secret_values
from contracts import topics
from engine.agent_host import AgentHostError, AgentHostSession
from engine.bus import MessageBus, Subscription, SubscriptionClosed
from engine.features.drift import DriftMonitor, DriftResult, sampled_observer
from engine.loader import AgentLoadError, load_agents
from engine.regime import REGIME
from engine.telemetry.logging import configure_logging, get_logger
from engine.telemetry.metrics import LatencyHistogram
from engine.workers.frames import (
    AgentReport,
    Failed,
    Feed,
    FrameError,
    FromWorker,
    Output,
    Ready,
    Report,
    Start,
    Stop,
    Stopped,
    Sync,
    encode,
    read_from_engine,
)


def output_patterns(agents: Sequence[str]) -> list[str]:
    """What the engine takes from a worker: its agents' signals, watermarks and statuses."""
    patterns: list[str] = []
    for name in agents:
        patterns += [
            topics.signals_of(name),
            topics.agent_watermark(name),
            topics.agent_status(name),
        ]
    return patterns


class WorkerHost:
    """Hosts the agents a `Start` frame names until `Stop` or the end of the input."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, start: Start
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._start = start
        self.config: EngineConfig = start.config
        self.log = get_logger("engine").bind(subsystem="agent-worker", worker=start.worker)
        cfg = self.config
        self.bus = MessageBus(
            default_capacity=cfg.bus.default_capacity, default_policy=cfg.bus.default_policy
        )
        self._histograms = {name: LatencyHistogram() for name in start.agents}
        self._crash: BaseException | None = None
        self._engine_gone = asyncio.Event()
        """Set when nothing more can reach the engine (see `_forward_failure` for why)."""
        self._forward_failure: str | None = None
        self.session: AgentHostSession | None = None
        self.drift: DriftMonitor | None = None
        self._syncs = 0

    def _crashed(self, exc: BaseException) -> None:
        self._crash = exc

    async def _send(self, frame: FromWorker) -> None:
        self._writer.write(encode(frame))
        await self._writer.drain()

    def _report(self, *, evaluate_drift: bool = True) -> Report:
        session = self.session
        runners = session.supervisor.runners if session and session.supervisor else {}
        out: dict[str, AgentReport] = {}
        for name, runner in runners.items():
            hist = self._histograms[name]
            out[name] = AgentReport(
                state=runner.state,
                stats=runner.stats,
                handler_counts=list(hist.counts),
                handler_total_s=hist.total,
            )
        drift: list[DriftResult] = []
        if self.drift is not None:
            if evaluate_drift:
                self.drift.evaluate()
            drift = list(self.drift.results().values())
        return Report(out, syncs=self._syncs, drift=drift)

    async def run(self) -> int:
        start = self._start
        try:
            loaded = load_agents([a for a in self.config.agents if a.name in start.agents])
        except AgentLoadError as exc:
            await self._send(Failed(list(exc.problems)))
            return 1
        missing = sorted(set(start.agents) - {la.config.name for la in loaded})
        if missing:
            await self._send(Failed([f"agents not configured or disabled: {', '.join(missing)}"]))
            return 1
        # BLOCK whatever the bus default: every signal and watermark must reach the engine.
        out = self.bus.subscribe(
            output_patterns(start.agents),
            name="worker.output",
            capacity=4096,
            policy=OverflowPolicy.BLOCK,
        )
        session = self.session = AgentHostSession(
            self.config,
            loaded,
            bus=self.bus,
            log=self.log,
            on_crash=self._crashed,
            handler_latency=self._histograms.get,
            lockstep=True,
            shared_features=False,  # it runs ahead of the engine: see AgentHostSession
        )
        drift_cfg = self.config.feature_store.drift
        if drift_cfg.enabled:
            # The worker's agents publish their features here, not in the engine's store: their
            # drift is tracked here, alike, and travels to the engine's /metrics in each Report.
            self.drift = DriftMonitor(
                window=drift_cfg.window,
                psi_threshold=drift_cfg.psi_threshold,
                ks_threshold=drift_cfg.ks_threshold,
                log=get_logger("engine").bind(subsystem="drift", worker=start.worker),
                min_samples=min(50, drift_cfg.window),
            )
            session.features.write_observer = sampled_observer(
                self.drift.observe,
                drift_cfg.sample_every,
                skip=frozenset({REGIME.name}),  # the engine reports the regime labels' drift
            )
        try:
            await session.start()
        except Exception as exc:
            await self._send(Failed([f"agent worker could not start: {type(exc).__name__}: {exc}"]))
            with contextlib.suppress(Exception):
                await session.stop()
            return 1
        forward = asyncio.create_task(self._forward(out), name="worker-output")
        await self._send(Ready(os.getpid()))
        self.log.info("agent worker running", agents=list(start.agents), pid=os.getpid())
        serving = asyncio.create_task(self._serve(session), name="worker-serve")
        gone = asyncio.create_task(self._engine_gone.wait(), name="worker-engine-gone")
        await asyncio.wait({serving, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not serving.done():  # nothing more reaches the engine: stop the agents and end
            serving.cancel()
            out.close()  # releases agents blocked on a full output mailbox
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            await session.stop()
            if self._forward_failure is not None:  # the pipe still works: say why
                self.log.error("agent worker cannot go on", reason=self._forward_failure)
                with contextlib.suppress(ConnectionError, OSError):
                    await self._send(Failed([self._forward_failure]))
            return 1
        try:
            failure = serving.result()
        except Exception as exc:
            failure = f"agent worker failed: {type(exc).__name__}: {exc}"
        await session.stop()  # the agents' on_stop; their last outputs go out before the end
        out.close()
        with contextlib.suppress(Exception):
            await forward
        if self._crash is not None:
            self.log.error("an agent runner crashed in the worker", exc_info=self._crash)
            failure = failure or f"an agent runner crashed: {self._crash!r}"
        try:
            await self._send(self._report())
            # Stopped only answers the engine's Stop; anything else ends with the reason.
            await self._send(Stopped() if failure is None else Failed([failure]))
        except (ConnectionError, OSError):
            return 1
        return 0 if failure is None else 1

    async def _serve(self, session: AgentHostSession) -> str | None:
        """Handle the engine's frames until `Stop` (None) or a failure (its reason)."""
        every = max(self._start.report_every, 1)
        frames = 0
        while True:
            try:
                frame = await read_from_engine(self._reader)
            except FrameError as exc:
                return f"corrupt frame from the engine: {exc}"
            if frame is None:
                return "the engine closed the feed without Stop"
            if isinstance(frame, Stop):
                return None
            if isinstance(frame, Sync):
                self._syncs += 1
                await self._send(self._report())
                continue
            if not isinstance(frame, Feed):  # a second Start
                return f"unexpected frame from the engine: {type(frame).__name__}"
            try:
                for topic, message in frame.items:
                    await session.feed(topic, message)
            except AgentHostError as exc:
                return str(exc)
            frames += 1
            if frames % every == 0:
                # counters often, drift (numpy over every tracked feature) 8x less often
                await self._send(self._report(evaluate_drift=frames % (8 * every) == 0))

    async def _forward(self, sub: Subscription) -> None:
        while True:
            try:
                batch = await sub.get_batch(1024)
            except SubscriptionClosed:
                return
            try:
                await self._send(Output(batch))
            except (ConnectionError, OSError):
                self._engine_gone.set()  # `run` stops the agents and exits
                return
            except Exception as exc:  # e.g. an output that does not pickle: the worker fails
                self._forward_failure = f"cannot send its agents' output: {exc!r}"
                self._engine_gone.set()
                return


async def _open_channels() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Frame channels on private copies of fds 0 and 1; fd 1 then points at stderr."""
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(in_fd, "rb", buffering=0)
    )
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the engine's process dies (it has its own session,
    so a terminal's hang-up does not reach it, and a killed engine closes no pipe in time if
    the worker is busy)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the engine died before that took effect
        os.kill(os.getpid(), signal.SIGTERM)


async def serve() -> int:
    _die_with_parent()
    reader, writer = await _open_channels()
    try:
        first = await read_from_engine(reader)
    except FrameError as exc:
        print(f"agent worker: corrupt start frame: {exc}", file=sys.stderr)
        return 2
    if not isinstance(first, Start):
        print("agent worker: expected a Start frame first", file=sys.stderr)
        return 2
    sys.path[:] = list(first.sys_path)
    cfg = first.config
    configure_logging(
        cfg.telemetry.log_level,
        cfg.telemetry.log_format,
        component_levels=cfg.telemetry.component_levels,
        secrets=secret_values(cfg),
    )
    host = WorkerHost(reader, writer, first)
    try:
        return await host.run()
    finally:
        with contextlib.suppress(Exception):
            writer.close()
            await writer.wait_closed()


__all__ = ["WorkerHost", "output_patterns", "serve"]
