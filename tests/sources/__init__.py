"""Tests of the replay source (engine.sources.replay) and the bundled data (engine.data).

Shared helpers live here (the task owns tests/sources only, not a conftest elsewhere).
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.models import ReplaySourceConfig
from contracts.ids import IdGenerator
from contracts.market import Bar, MacroObservation
from engine.bus import MessageBus
from engine.clock import ReplayClock
from engine.sources.replay import LoadedSource, ReplayFeed, ReplayStats


def write(path: Path, text: str, *, gz: bool = False) -> Path:
    """Write `text` (dedented lines, trailing newline) to `path`, gzip-compressed if `gz`."""
    lines = [line.strip() for line in text.strip().splitlines()]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def source_cfg(*paths: str | Path, name: str = "src", **kwargs: Any) -> ReplaySourceConfig:
    """A validated replay source config over `paths`."""
    return ReplaySourceConfig.model_validate(
        {"kind": "replay", "name": name, "paths": [str(p) for p in paths], **kwargs}
    )


async def replay_all(
    sources: Sequence[LoadedSource], *, seed: int = 7, **feed_kwargs: Any
) -> tuple[list[tuple[str, object]], ReplayStats]:
    """Run a feed over `sources` and return every (topic, message) it published, in order."""
    bus = MessageBus()
    sub = bus.subscribe(">", name="everything", capacity=1_000_000)
    clock = ReplayClock(datetime(1970, 1, 1, tzinfo=UTC))
    feed = ReplayFeed(sources, bus=bus, clock=clock, ids=IdGenerator(seed), **feed_kwargs)
    stats = await feed.run()
    published: list[tuple[str, object]] = []
    while sub.depth:
        published.extend(await sub.get_batch(100_000))
    return published, stats


def events(published: Sequence[tuple[str, object]]) -> list[Bar | MacroObservation]:
    """The bars and macro observations of `published`, watermarks left out."""
    return [m for _, m in published if isinstance(m, Bar | MacroObservation)]
