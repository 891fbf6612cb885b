"""Per-subscriber delivery order = publish order, across topics, batches and publishers."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bus import (
    Delivery,
    MailboxFull,
    MessageBus,
    OverflowPolicy,
    Subscription,
    SubscriptionClosed,
    topic_matches,
)

from .helpers import finish, settle

TOPICS = [
    "bar.AAPL",
    "bar.MSFT",
    "bar.BRK_B",
    "signal.momentum.AAPL",
    "signal.meanrev.MSFT",
    "watermark.replay",
    "intent.AAPL",
]
PATTERNS = ["bar.>", "bar.AAPL", "*.AAPL", "signal.*.AAPL", ">", "signal.>", "nothing.>"]


def _expected(pattern: str, published: list[Delivery]) -> list[Delivery]:
    return [(t, m) for t, m in published if topic_matches(pattern, t)]


async def _collect(sub: Subscription, received: list[Delivery], batch: int) -> None:
    # Mixes the three read APIs so each is covered by the ordering checks.
    while True:
        try:
            if batch > 1:
                received.extend(await sub.get_batch(batch))
            else:
                received.append(await sub.get())
        except SubscriptionClosed:
            return


async def test_publish_when_many_interleaved_topics_then_each_subscriber_sees_publish_order() -> (
    None
):
    # Arrange
    bus = MessageBus(default_capacity=5)
    subs = [bus.subscribe(p, name=f"s{i}") for i, p in enumerate(PATTERNS)]
    received: list[list[Delivery]] = [[] for _ in subs]
    consumers = [
        asyncio.create_task(_collect(s, r, batch=i % 3 + 1))
        for i, (s, r) in enumerate(zip(subs, received, strict=True))
    ]
    rng = random.Random(7)
    published: list[Delivery] = []

    async def publisher() -> None:
        seq = 0
        while seq < 3000:
            if rng.randrange(3) == 0:
                topic = rng.choice(TOPICS)
                await bus.publish(topic, seq)
                published.append((topic, seq))
                seq += 1
            else:
                items: list[tuple[str, object]] = [
                    (rng.choice(TOPICS), seq + k) for k in range(rng.randint(1, 40))
                ]
                await bus.publish_batch(items)
                published.extend(items)
                seq += len(items)
            if rng.random() < 0.1:
                await asyncio.sleep(0)
        for sub in subs:
            sub.close()
        await asyncio.gather(*consumers)

    # Act
    await finish(publisher())
    # Assert
    for pattern, got in zip(PATTERNS, received, strict=True):
        assert got == _expected(pattern, published), pattern
    assert received[PATTERNS.index("nothing.>")] == []


async def test_publish_batch_when_routes_differ_per_item_then_order_kept_per_subscriber() -> None:
    # Arrange
    bus = MessageBus(default_capacity=100)
    aapl = bus.subscribe("*.AAPL", name="aapl")
    bars = bus.subscribe("bar.*", name="bars")
    items: list[tuple[str, object]] = [
        ("bar.AAPL", 0),
        ("bar.MSFT", 1),
        ("intent.AAPL", 2),
        ("bar.AAPL", 3),
        ("bar.MSFT", 4),
    ]
    # Act
    await bus.publish_batch(items)
    # Assert
    assert await aapl.get_batch(10) == [("bar.AAPL", 0), ("intent.AAPL", 2), ("bar.AAPL", 3)]
    assert await bars.get_batch(10) == [
        ("bar.AAPL", 0),
        ("bar.MSFT", 1),
        ("bar.AAPL", 3),
        ("bar.MSFT", 4),
    ]


async def test_publish_when_concurrent_publishers_blocked_then_all_subscribers_see_one_order() -> (
    None
):
    # Arrange
    bus = MessageBus()
    slow = bus.subscribe("bar.>", name="slow", capacity=1, policy=OverflowPolicy.BLOCK)
    fast = bus.subscribe("bar.>", name="fast", capacity=100, policy=OverflowPolicy.BLOCK)
    await bus.publish("bar.A", "first")

    async def publisher(tag: str) -> None:
        for i in range(3):
            await bus.publish("bar.A", f"{tag}{i}")

    # Act
    tasks = [asyncio.create_task(publisher(tag)) for tag in ("x", "y")]
    await settle()
    slow_seen: list[str] = []
    for _ in range(20):
        if slow.depth:
            slow_seen.append(str(slow.get_nowait()[1]))
        await settle()
    assert all(t.done() for t in tasks)
    fast_seen = [str(m) for _, m in await fast.get_batch(100)]
    # Assert
    assert slow_seen == fast_seen
    assert sorted(slow_seen) == sorted(["first", "x0", "x1", "x2", "y0", "y1", "y2"])


_op = st.one_of(
    st.tuples(st.just("one"), st.sampled_from(TOPICS)),
    st.tuples(st.just("nowait"), st.sampled_from(TOPICS)),
    st.tuples(st.just("batch"), st.lists(st.sampled_from(TOPICS), min_size=0, max_size=12)),
    st.tuples(st.just("yield"), st.just("")),
)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(_op, max_size=60),
    capacities=st.lists(st.integers(1, 4), min_size=len(PATTERNS), max_size=len(PATTERNS)),
    batch_sizes=st.lists(st.integers(1, 5), min_size=len(PATTERNS), max_size=len(PATTERNS)),
)
def test_publish_when_random_sequence_under_block_then_each_subscriber_gets_exact_matches(
    ops: list[tuple[str, object]], capacities: list[int], batch_sizes: list[int]
) -> None:
    async def scenario() -> tuple[list[Delivery], list[list[Delivery]], MessageBus]:
        bus = MessageBus(default_policy=OverflowPolicy.BLOCK)
        subs = [
            bus.subscribe(p, name=f"s{i}", capacity=c)
            for i, (p, c) in enumerate(zip(PATTERNS, capacities, strict=True))
        ]
        received: list[list[Delivery]] = [[] for _ in subs]
        consumers = [
            asyncio.create_task(_collect(s, r, b))
            for s, r, b in zip(subs, received, batch_sizes, strict=True)
        ]
        published: list[Delivery] = []
        seq = 0

        async def drive() -> None:
            nonlocal seq
            for kind, arg in ops:
                if kind == "one":
                    assert isinstance(arg, str)
                    await bus.publish(arg, seq)
                    published.append((arg, seq))
                    seq += 1
                elif kind == "nowait":
                    assert isinstance(arg, str)
                    if all(s.depth < s.capacity for s in subs if topic_matches(s.pattern, arg)):
                        bus.publish_nowait(arg, seq)
                        published.append((arg, seq))
                        seq += 1
                    else:
                        with pytest.raises(MailboxFull):
                            bus.publish_nowait(arg, "rejected")
                elif kind == "batch":
                    assert isinstance(arg, list)
                    items: list[tuple[str, object]] = [(t, seq + k) for k, t in enumerate(arg)]
                    await bus.publish_batch(items)
                    published.extend(items)
                    seq += len(items)
                else:
                    await asyncio.sleep(0)
            for sub in subs:
                sub.close()
            await asyncio.gather(*consumers)

        # A lost wake-up becomes a failure instead of a stuck test run.
        await finish(drive())
        return published, received, bus

    # Arrange / Act
    published, received, bus = asyncio.run(scenario())
    # Assert
    for pattern, got in zip(PATTERNS, received, strict=True):
        assert got == _expected(pattern, published)
    per_topic = Counter(t for t, _ in published)
    # A rejected publish_nowait counts nothing (its topic may be known with zero counts).
    assert {t: s.published for t, s in bus.stats().topics.items() if s.published} == per_topic
