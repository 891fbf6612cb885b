"""Counters and the BusStats snapshot."""

from __future__ import annotations

import dataclasses

import pytest

from engine.bus import BusStats, MessageBus, OverflowPolicy, SubscriptionStats, TopicStats

from .helpers import drain


async def test_publish_when_no_subscriber_matches_then_counted_unrouted_for_topic() -> None:
    # Arrange
    bus = MessageBus()
    bus.subscribe("bar.>", name="bars")
    # Act
    await bus.publish("macro.DGS10", 1)
    bus.publish_nowait("macro.DGS10", 2)
    await bus.publish_batch([("macro.CPI", 3), ("bar.A", 4)])
    await bus.publish("bar.A", 5)
    # Assert
    topics = bus.stats().topics
    assert topics["macro.DGS10"] == TopicStats("macro.DGS10", published=2, unrouted=2)
    assert topics["macro.CPI"] == TopicStats("macro.CPI", published=1, unrouted=1)
    assert topics["bar.A"] == TopicStats("bar.A", published=2, unrouted=0)
    assert (bus.stats().published, bus.stats().unrouted) == (5, 3)


async def test_stats_when_messages_flowed_then_snapshot_has_every_counter() -> None:
    # Arrange
    bus = MessageBus(default_capacity=4)
    block = bus.subscribe("bar.>", name="block")
    drop = bus.subscribe("bar.A", name="drop", capacity=2, policy=OverflowPolicy.DROP_OLDEST)
    for i in range(3):
        await bus.publish("bar.A", i)
    await bus.publish("bar.B", 3)
    await block.get()
    # Act
    stats = bus.stats()
    # Assert
    assert isinstance(stats, BusStats)
    assert stats.subscriptions["block"] == SubscriptionStats(
        name="block",
        pattern="bar.>",
        policy=OverflowPolicy.BLOCK,
        capacity=4,
        depth=3,
        high_water=4,
        delivered=1,
        dropped=0,
        conflated=0,
        blocked_publishers=0,
    )
    assert stats.subscriptions["drop"] == SubscriptionStats(
        name="drop",
        pattern="bar.A",
        policy=OverflowPolicy.DROP_OLDEST,
        capacity=2,
        depth=2,
        high_water=2,
        delivered=0,
        dropped=1,
        conflated=0,
        blocked_publishers=0,
    )
    assert stats.topics["bar.A"].published == 3
    assert (block.depth, len(block), drop.depth) == (3, 3, 2)


async def test_stats_when_bus_changes_later_then_snapshot_unchanged_and_frozen() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s")
    await bus.publish("bar.A", 1)
    snapshot = bus.stats()
    # Act
    await bus.publish("bar.A", 2)
    await bus.publish("bar.B", 3)
    drain(sub)
    # Assert
    assert snapshot.topics["bar.A"].published == 1
    assert "bar.B" not in snapshot.topics
    assert snapshot.subscriptions["s"].depth == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.subscriptions["s"].depth = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        snapshot.topics["bar.A"] = TopicStats("bar.A", 0, 0)  # type: ignore[index]


async def test_publish_when_topic_cardinality_exceeds_cap_then_still_routed_counted_aggregate() -> (
    None
):
    # Arrange
    bus = MessageBus(max_topics=2)
    sub = bus.subscribe("bar.>", name="s", capacity=100)
    # Act
    for i in range(5):
        await bus.publish(f"bar.S{i}", i)
    await bus.publish_batch([("bar.S3", 5), ("bar.S0", 6), ("quote.X", 7)])
    # Assert
    stats = bus.stats()
    assert set(stats.topics) == {"bar.S0", "bar.S1"}
    assert (stats.untracked_published, stats.untracked_unrouted) == (5, 1)
    assert stats.published == 8
    assert [m for _, m in drain(sub)] == [0, 1, 2, 3, 4, 5, 6]


async def test_subscribe_when_topic_route_cached_then_cache_invalidated() -> None:
    # Arrange
    bus = MessageBus()
    await bus.publish("bar.A", 0)  # caches an empty route
    # Act
    sub = bus.subscribe("bar.*", name="s")
    await bus.publish("bar.A", 1)
    sub.close()
    await bus.publish("bar.A", 2)
    # Assert
    assert drain(sub) == [("bar.A", 1)]
    assert bus.stats().topics["bar.A"] == TopicStats("bar.A", published=3, unrouted=2)


async def test_get_batch_when_many_pending_then_high_water_and_delivered_track_batches() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=10)
    await bus.publish_batch([("bar.A", i) for i in range(7)])
    # Act
    first = await sub.get_batch(3)
    await bus.publish("bar.A", 7)
    rest = await sub.get_batch(10)
    # Assert
    assert [m for _, m in first + rest] == list(range(8))
    stats = sub.stats()
    assert (stats.delivered, stats.high_water, stats.depth) == (8, 7, 0)
