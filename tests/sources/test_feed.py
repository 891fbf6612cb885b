"""ReplayFeed: timeline merge, watermarks, clock, lock-step, determinism and pacing."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from contracts import topics
from contracts.ids import IdGenerator
from contracts.market import Bar, MacroObservation, Watermark
from engine.bus import MessageBus
from engine.clock import ClockError, ReplayClock
from engine.sources import replay
from engine.sources.replay import LoadedSource, ReplayFeed, load_source
from tests.sources import events, replay_all, source_cfg, write

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=21, tzinfo=UTC)


class RecordingBus(MessageBus):
    """A real bus that also records each publish_batch call and the clock time at that call."""

    def __init__(self, clock: ReplayClock) -> None:
        super().__init__()
        self.clock = clock
        self.batches: list[tuple[datetime, list[tuple[str, object]]]] = []

    async def publish_batch(self, items: Sequence[tuple[str, object]]) -> None:
        self.batches.append((self.clock.now(), list(items)))
        await super().publish_batch(items)


@pytest.fixture
def three_sources(tmp_path: Path) -> list[LoadedSource]:
    """stocks: 4 dates; early: ends after the 1st date; macro: starts at the 3rd date."""
    stocks = write(
        tmp_path / "stocks.csv",
        """
        Date,AAA,BBB
        2020-01-02,1,2
        2020-01-03,1.1,
        2020-01-06,1.2,2.2
        2020-01-07,1.3,2.3
        """,
    )
    early = write(tmp_path / "early.csv", "Date,CCC\n2020-01-02,5")
    macro = write(tmp_path / "macro.csv", "Date,S1,S2\n2020-01-06,0.01,0.02\n2020-01-08,,0.03")
    return [
        load_source(source_cfg(stocks, name="stocks"), base_dir=tmp_path),
        load_source(source_cfg(early, name="early"), base_dir=tmp_path),
        load_source(source_cfg(macro, name="rates", data="macro"), base_dir=tmp_path),
    ]


def _describe(message: object) -> tuple[str, str]:
    if isinstance(message, Bar):
        return ("bar", message.symbol)
    if isinstance(message, MacroObservation):
        return ("macro", message.series)
    assert isinstance(message, Watermark)
    return ("wm", message.origin)


async def test_run_when_sources_merged_then_events_then_one_watermark_per_source_each_step(
    three_sources: list[LoadedSource],
) -> None:
    # Arrange
    clock = ReplayClock(EPOCH)
    bus = RecordingBus(clock)
    feed = ReplayFeed(three_sources, bus=bus, clock=clock, ids=IdGenerator(3))
    wms = [("wm", "stocks"), ("wm", "early"), ("wm", "rates")]
    # Act
    stats = await feed.run()
    # Assert: one batch per step; events (source order, then file order) before watermarks
    steps = [[_describe(m) for _, m in batch] for _, batch in bus.batches]
    assert steps == [
        [("bar", "AAA"), ("bar", "BBB"), ("bar", "CCC"), *wms],
        [("bar", "AAA"), *wms],
        [("bar", "AAA"), ("bar", "BBB"), ("macro", "S1"), ("macro", "S2"), *wms],
        [("bar", "AAA"), ("bar", "BBB"), *wms],
        [("macro", "S2"), *wms],  # stocks and early are exhausted and keep vouching
    ]
    for ts, batch in bus.batches:
        for topic, message in batch:
            assert isinstance(message, Bar | MacroObservation | Watermark)
            assert message.ts_event == ts
            assert message.ts_init == ts
            if isinstance(message, Watermark):
                assert topic == topics.source_watermark(message.origin)
            elif isinstance(message, Bar):
                assert topic == topics.bar(message.symbol)
            else:
                assert topic == topics.macro(message.series)
    assert stats == replay.ReplayStats(
        steps=5, bars=8, macro=3, first_ts=_at("2020-01-02"), last_ts=_at("2020-01-08")
    )
    assert feed.steps_total == 5


async def test_run_when_publishing_then_clock_already_at_step_time(
    three_sources: list[LoadedSource],
) -> None:
    # Arrange
    clock = ReplayClock(EPOCH)
    bus = RecordingBus(clock)
    feed = ReplayFeed(three_sources, bus=bus, clock=clock, ids=IdGenerator(3))
    # Act
    await feed.run()
    # Assert: the clock read inside publish_batch equals every message's ts_event
    for now, batch in bus.batches:
        assert {m.ts_event for _, m in batch if isinstance(m, Watermark)} == {now}
    assert [now for now, _ in bus.batches] == [
        _at(d) for d in ("2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08")
    ]
    assert clock.now() == _at("2020-01-08")


async def test_run_when_step_done_given_then_next_step_waits_for_it(
    three_sources: list[LoadedSource],
) -> None:
    # Arrange
    clock = ReplayClock(EPOCH)
    bus = MessageBus()
    sub = bus.subscribe(">", name="pipeline", capacity=10_000)
    seen_at_done: list[tuple[datetime, set[datetime], int]] = []
    progress: list[tuple[int, datetime]] = []

    async def step_done(ts: datetime) -> None:
        await asyncio.sleep(0)  # a real pipeline suspends here
        delivered = await sub.get_batch(10_000)
        published = bus.stats().published
        seen_at_done.append((ts, {m.ts_event for _, m in delivered}, published))  # type: ignore[attr-defined]

    feed = ReplayFeed(three_sources, bus=bus, clock=clock, ids=IdGenerator(3), step_done=step_done)
    # Act
    await feed.run(on_step=lambda i, ts: progress.append((i, ts)))
    # Assert: when step k is done, only messages of ts_k exist (nothing of ts_k+1 published yet)
    per_step_messages = [6, 4, 7, 5, 4]  # events + 3 watermarks
    running = 0
    for (ts, stamps, published), count in zip(seen_at_done, per_step_messages, strict=True):
        running += count
        assert stamps == {ts}
        assert published == running
    assert progress == [(i, ts) for i, (ts, _, _) in enumerate(seen_at_done, 1)]


async def test_run_when_lock_step_consumer_reads_clock_then_clock_matches_each_message(
    three_sources: list[LoadedSource],
) -> None:
    # Arrange: a consumer task handles messages; step_done returns once it saw the last watermark
    clock = ReplayClock(EPOCH)
    bus = MessageBus()
    sub = bus.subscribe(">", name="agent", capacity=4)  # small: backpressure must not deadlock
    mismatches: list[str] = []
    done_steps: dict[datetime, asyncio.Event] = {}

    async def consume() -> None:
        async for topic, message in sub:
            assert isinstance(message, Bar | MacroObservation | Watermark)
            if clock.now() != message.ts_event:
                mismatches.append(topic)
            if topic == topics.source_watermark("rates"):  # last watermark of every step
                done_steps.setdefault(message.ts_event, asyncio.Event()).set()

    async def step_done(ts: datetime) -> None:
        await done_steps.setdefault(ts, asyncio.Event()).wait()

    consumer = asyncio.create_task(consume())
    feed = ReplayFeed(three_sources, bus=bus, clock=clock, ids=IdGenerator(3), step_done=step_done)
    # Act
    stats = await asyncio.wait_for(feed.run(), timeout=10)
    sub.close()
    await consumer
    # Assert
    assert mismatches == []
    assert len(done_steps) == stats.steps == 5


async def test_run_when_same_seed_then_identical_sequence_including_trace_ids(
    three_sources: list[LoadedSource],
) -> None:
    # Arrange / Act
    first, _ = await replay_all(three_sources, seed=42)
    second, _ = await replay_all(three_sources, seed=42)
    other, _ = await replay_all(three_sources, seed=43)

    # Assert
    def dump(published: list[tuple[str, object]]) -> list[tuple[str, str]]:
        return [(t, m.model_dump_json()) for t, m in published]  # type: ignore[attr-defined]

    assert dump(first) == dump(second)
    assert len({m.trace_id for _, m in first}) == len(first)  # type: ignore[attr-defined]
    assert [m.trace_id for _, m in first] != [m.trace_id for _, m in other]  # type: ignore[attr-defined]
    assert [t for t, _ in first] == [t for t, _ in other]


async def test_run_when_sources_loaded_with_range_then_only_range_replayed(
    tmp_path: Path,
) -> None:
    # Arrange
    path = write(
        tmp_path / "s.csv", "Date,AAA\n2020-01-02,1\n2020-01-03,2\n2020-01-06,3\n2020-01-07,4"
    )
    source = load_source(
        source_cfg(path), base_dir=tmp_path, start=date(2020, 1, 3), end=date(2020, 1, 6)
    )
    # Act
    published, stats = await replay_all([source])
    # Assert
    assert [b.close for b in events(published)] == [2.0, 3.0]  # type: ignore[union-attr]
    assert (stats.steps, stats.first_ts, stats.last_ts) == (
        2,
        _at("2020-01-03"),
        _at("2020-01-06"),
    )


class _Sleeps:
    """Stands in for the asyncio module inside engine.sources.replay, recording sleeps."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.mark.parametrize(
    ("speed", "expected"),
    [
        (86_400.0, [1.0, 3.0, 1.0, 1.0]),  # one replayed day per real second
        (1.0, [60.0, 60.0, 60.0, 60.0]),  # real time: each pause capped at MAX_SLEEP_S
        (172_800.0, [0.5, 1.5, 0.5, 0.5]),
    ],
)
async def test_run_when_speed_set_then_sleeps_scaled_gap_between_steps(
    three_sources: list[LoadedSource],
    monkeypatch: pytest.MonkeyPatch,
    speed: float,
    expected: list[float],
) -> None:
    # Arrange
    fake = _Sleeps()
    monkeypatch.setattr(replay, "asyncio", types.SimpleNamespace(sleep=fake.sleep))
    clock = ReplayClock(EPOCH)
    feed = ReplayFeed(three_sources, bus=MessageBus(), clock=clock, ids=IdGenerator(1), speed=speed)
    # Act
    await feed.run()
    # Assert: no pause before the first step; gaps 1, 3 (weekend), 1, 1 days
    assert fake.delays == pytest.approx(expected)
    assert replay.MAX_SLEEP_S == 60.0


async def test_run_when_speed_unset_then_never_pauses(
    three_sources: list[LoadedSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    fake = _Sleeps()
    monkeypatch.setattr(replay, "asyncio", types.SimpleNamespace(sleep=fake.sleep))
    feed = ReplayFeed(three_sources, bus=MessageBus(), clock=ReplayClock(EPOCH), ids=IdGenerator(1))
    # Act
    await feed.run()
    # Assert: only zero-length yields to the loop, one per step
    assert fake.delays == [0] * 5


def test_feed_when_speed_not_positive_then_value_error(three_sources: list[LoadedSource]) -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValueError, match="speed"):
        ReplayFeed(
            three_sources, bus=MessageBus(), clock=ReplayClock(EPOCH), ids=IdGenerator(1), speed=0
        )


def test_feed_when_source_names_repeat_then_value_error(three_sources: list[LoadedSource]) -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValueError, match="duplicate source name 'stocks'"):
        ReplayFeed(
            [three_sources[0], three_sources[0]],
            bus=MessageBus(),
            clock=ReplayClock(EPOCH),
            ids=IdGenerator(1),
        )


async def test_run_when_called_twice_then_runtime_error(three_sources: list[LoadedSource]) -> None:
    # Arrange
    feed = ReplayFeed(three_sources, bus=MessageBus(), clock=ReplayClock(EPOCH), ids=IdGenerator(1))
    await feed.run()
    # Act / Assert
    with pytest.raises(RuntimeError, match="runs once"):
        await feed.run()


async def test_run_when_clock_already_past_data_then_clock_error(
    three_sources: list[LoadedSource],
) -> None:
    # Arrange
    clock = ReplayClock(datetime(2030, 1, 1, tzinfo=UTC))
    feed = ReplayFeed(three_sources, bus=MessageBus(), clock=clock, ids=IdGenerator(1))
    # Act / Assert
    with pytest.raises(ClockError):
        await feed.run()


def test_feed_when_no_sources_then_zero_steps() -> None:
    # Arrange / Act
    feed = ReplayFeed([], bus=MessageBus(), clock=ReplayClock(EPOCH), ids=IdGenerator(1))
    # Assert
    assert (feed.steps_total, feed.first_ts, feed.last_ts) == (0, None, None)


def _dumped(batch: Sequence[tuple[str, object]]) -> list[tuple[str, str]]:
    return [(topic, message.model_dump_json()) for topic, message in batch]  # type: ignore[attr-defined]


async def test_run_when_prefetch_with_lookahead_then_same_batches_each_prefetched_before_published(
    tmp_path: Path,
) -> None:
    # Arrange: the same sources replayed twice, once plainly and once feeding a prefetch
    # callback two steps ahead (how the engine feeds its agent worker processes)
    def sources() -> list[LoadedSource]:
        stocks = write(
            tmp_path / "s.csv",
            "Date,AAA,BBB\n2020-01-02,1,2\n2020-01-03,1.1,\n2020-01-06,1.2,2.2\n2020-01-07,1.3,2.3",
        )
        macro = write(tmp_path / "m.csv", "Date,S1\n2020-01-06,0.01\n2020-01-08,0.03")
        return [
            load_source(source_cfg(stocks, name="stocks"), base_dir=tmp_path),
            load_source(source_cfg(macro, name="rates", data="macro"), base_dir=tmp_path),
        ]

    plain_clock = ReplayClock(EPOCH)
    plain_bus = RecordingBus(plain_clock)
    plain = ReplayFeed(sources(), bus=plain_bus, clock=plain_clock, ids=IdGenerator(5))
    order: list[tuple[str, datetime]] = []
    prefetched: list[tuple[datetime, list[tuple[str, str]]]] = []

    async def prefetch(ts: datetime, batch: Sequence[tuple[str, object]]) -> None:
        order.append(("prefetch", ts))
        prefetched.append((ts, _dumped(batch)))

    async def step_done(ts: datetime) -> None:
        order.append(("published", ts))

    clock = ReplayClock(EPOCH)
    bus = RecordingBus(clock)
    ahead = ReplayFeed(
        sources(),
        bus=bus,
        clock=clock,
        ids=IdGenerator(5),
        prefetch=prefetch,
        lookahead=2,
        step_done=step_done,
    )
    # Act
    plain_stats = await plain.run()
    stats = await ahead.run()
    # Assert: the same messages, ids included, and the same clock at each publication
    assert stats == plain_stats
    assert [(t, _dumped(b)) for t, b in bus.batches] == [
        (t, _dumped(b)) for t, b in plain_bus.batches
    ]
    # every step prefetched once, in order, with exactly what is published for it later
    assert prefetched == [(t, _dumped(b)) for t, b in plain_bus.batches]
    steps = [t for t, _ in plain_bus.batches]
    assert len(steps) == 5
    # the current step and the two after it are out before the first is published
    first_four = [("prefetch", steps[0]), ("prefetch", steps[1]), ("prefetch", steps[2])]
    first_four.append(("published", steps[0]))
    assert order[:4] == first_four
    for i, ts in enumerate(steps):
        published_at = order.index(("published", ts))
        assert order.index(("prefetch", ts)) < published_at
        later = steps[i + 1 : i + 3]  # up to two steps ahead are already out
        assert all(order.index(("prefetch", t)) < published_at for t in later)


def test_feed_when_lookahead_negative_then_value_error(three_sources: list[LoadedSource]) -> None:
    clock = ReplayClock(EPOCH)
    with pytest.raises(ValueError, match="lookahead"):
        ReplayFeed(three_sources, bus=MessageBus(), clock=clock, ids=IdGenerator(1), lookahead=-1)
