"""The pipe protocol between the engine and its agent worker processes.

Why pickle: both ends are the same program (the engine starts the worker from its own
interpreter and code), the payloads are the engine's own contracts, and pickle carries a
step's pydantic models and a frozen config without re-validating them: the feed costs the
engine ~2 us per message. The pipe is never exposed to other programs, so pickle's
trust-the-sender rule holds; anything that does not decode to one of the frames below is a
`FrameError`, which the engine treats as the worker failing.

Each frame is a 4-byte big-endian length and a pickled frame object. Engine -> worker:
`Start`, then `Feed` (one replay step each), `Sync` when the engine wants current counters,
and finally `Stop`. Worker ->
engine: `Ready` or `Failed`, then `Output` (what the hosted agents published, in order) and
`Report` (their counters and handler-time histograms), and `Stopped` last.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass, field
from typing import Final

from config import EngineConfig
from contracts import AgentState
from engine.features.drift import DriftResult
from engine.supervisor import AgentStats

HEADER: Final = struct.Struct("!I")
MAX_FRAME_BYTES: Final = 256 * 1024 * 1024
"""A length above this is a corrupt stream, not a big step."""


class FrameError(Exception):
    """The stream is corrupt or was cut in the middle of a frame."""


@dataclass(frozen=True, slots=True)
class Start:
    worker: int
    config: EngineConfig
    agents: tuple[str, ...]
    sys_path: tuple[str, ...]
    """The engine's import path: plugins configured by path import in the worker as in the
    engine (e.g. a module a test or a user put on sys.path)."""
    report_every: int = 32
    """Feed frames between two `Report`s (agents' counters; drift every 8th of them)."""


@dataclass(frozen=True, slots=True)
class Feed:
    items: list[tuple[str, object]]


@dataclass(frozen=True, slots=True)
class Sync:
    """Asks for a `Report` once every step fed before it has been handled."""


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class Failed:
    problems: list[str]


@dataclass(frozen=True, slots=True)
class Output:
    items: list[tuple[str, object]]


@dataclass(frozen=True, slots=True)
class AgentReport:
    state: AgentState
    stats: AgentStats
    handler_counts: list[int] = field(default_factory=list)
    handler_total_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Report:
    agents: dict[str, AgentReport]
    syncs: int = 0
    """`Sync` frames answered so far (this report included)."""
    drift: list[DriftResult] = field(default_factory=list)
    """The latest drift statistics of the features the worker's agents publish."""


@dataclass(frozen=True, slots=True)
class Stopped:
    pass


ToWorker = Start | Feed | Sync | Stop
FromWorker = Ready | Failed | Output | Report | Stopped
_TO_WORKER: Final = (Start, Feed, Sync, Stop)
_FROM_WORKER: Final = (Ready, Failed, Output, Report, Stopped)


def encode(frame: ToWorker | FromWorker) -> bytes:
    payload = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


async def _read(reader: asyncio.StreamReader) -> object | None:
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None  # a clean end between frames
        raise FrameError("stream ended inside a frame header") from exc
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {size} bytes announced (limit {MAX_FRAME_BYTES})")
    try:
        payload = await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise FrameError(f"stream ended after {len(exc.partial)} of {size} frame bytes") from exc
    try:
        frame: object = pickle.loads(payload)
    except Exception as exc:
        raise FrameError(f"undecodable frame: {type(exc).__name__}: {exc}") from exc
    return frame


async def read_from_worker(reader: asyncio.StreamReader) -> FromWorker | None:
    """The next frame from a worker; None at a clean end of the stream."""
    frame = await _read(reader)
    if frame is None or isinstance(frame, _FROM_WORKER):
        return frame
    raise FrameError(f"unexpected frame from a worker: {type(frame).__name__}")


async def read_from_engine(reader: asyncio.StreamReader) -> ToWorker | None:
    """The next frame from the engine; None at a clean end of the stream."""
    frame = await _read(reader)
    if frame is None or isinstance(frame, _TO_WORKER):
        return frame
    raise FrameError(f"unexpected frame from the engine: {type(frame).__name__}")


__all__ = [
    "MAX_FRAME_BYTES",
    "AgentReport",
    "Failed",
    "Feed",
    "FrameError",
    "FromWorker",
    "Output",
    "Ready",
    "Report",
    "Start",
    "Stop",
    "Stopped",
    "Sync",
    "ToWorker",
    "encode",
    "read_from_engine",
    "read_from_worker",
]
