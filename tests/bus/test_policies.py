"""Overflow policies under a full mailbox: what is kept, what is counted, who waits."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from engine.bus import MailboxFull, MessageBus, OverflowPolicy

from .helpers import drain, settle


async def test_publish_when_drop_oldest_full_then_oldest_evicted_and_counted() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=3, policy=OverflowPolicy.DROP_OLDEST)
    # Act
    for i in range(5):
        await bus.publish("bar.A", i)
    # Assert
    assert drain(sub) == [("bar.A", 2), ("bar.A", 3), ("bar.A", 4)]
    stats = sub.stats()
    assert (stats.dropped, stats.conflated, stats.delivered) == (2, 0, 3)
    assert stats.high_water == 3


async def test_publish_batch_when_drop_oldest_overflows_then_last_capacity_kept() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=3, policy=OverflowPolicy.DROP_OLDEST)
    await bus.publish("bar.A", "old")
    # Act
    await bus.publish_batch([("bar.A", i) for i in range(5)])
    # Assert
    assert drain(sub) == [("bar.A", 2), ("bar.A", 3), ("bar.A", 4)]
    assert sub.stats().dropped == 3


def test_publish_nowait_when_drop_oldest_full_then_never_raises() -> None:
    # Arrange
    bus = MessageBus(default_policy=OverflowPolicy.DROP_OLDEST, default_capacity=2)
    sub = bus.subscribe("bar.>", name="s")
    # Act
    for i in range(4):
        bus.publish_nowait("bar.A", i)
    # Assert
    assert drain(sub) == [("bar.A", 2), ("bar.A", 3)]
    assert sub.stats().dropped == 2


async def test_publish_when_block_full_then_publisher_waits_and_nothing_dropped() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=2, policy=OverflowPolicy.BLOCK)
    await bus.publish("bar.A", 0)
    await bus.publish("bar.A", 1)
    # Act
    publisher = asyncio.create_task(bus.publish("bar.A", 2))
    await settle()
    # Assert
    assert not publisher.done()
    assert sub.depth == 2
    assert sub.stats().blocked_publishers == 1
    assert sub.get_nowait() == ("bar.A", 0)
    await settle()
    assert publisher.done()
    assert drain(sub) == [("bar.A", 1), ("bar.A", 2)]
    assert sub.stats().dropped == 0


async def test_publish_nowait_when_block_full_then_mailbox_full_and_nobody_receives() -> None:
    # Arrange
    bus = MessageBus()
    other = bus.subscribe("bar.>", name="other", capacity=10)
    full = bus.subscribe("bar.A", name="full", capacity=1, policy=OverflowPolicy.BLOCK)
    bus.publish_nowait("bar.A", 0)
    # Act / Assert
    with pytest.raises(MailboxFull, match="'full'") as raised:
        bus.publish_nowait("bar.A", 1)
    assert raised.value.subscription == "full"
    assert drain(other) == [("bar.A", 0)]
    assert drain(full) == [("bar.A", 0)]
    assert bus.stats().topics["bar.A"].published == 1


def test_publish_nowait_when_block_full_for_other_topic_then_delivers() -> None:
    # Arrange
    bus = MessageBus()
    full = bus.subscribe("bar.A", name="full", capacity=1)
    other = bus.subscribe("bar.B", name="other", capacity=1)
    bus.publish_nowait("bar.A", 0)
    # Act
    bus.publish_nowait("bar.B", 1)
    # Assert
    assert drain(other) == [("bar.B", 1)]
    assert full.depth == 1


async def test_publish_when_conflate_default_key_then_latest_per_topic_keeps_first_position() -> (
    None
):
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=8, policy=OverflowPolicy.CONFLATE)
    # Act
    await bus.publish("bar.A", 1)
    await bus.publish("bar.B", 1)
    await bus.publish("bar.A", 2)
    await bus.publish("bar.C", 1)
    await bus.publish("bar.A", 3)
    # Assert
    assert drain(sub) == [("bar.A", 3), ("bar.B", 1), ("bar.C", 1)]
    stats = sub.stats()
    assert (stats.conflated, stats.dropped, stats.delivered) == (2, 2, 3)


async def test_publish_when_conflate_key_already_delivered_then_new_entry_goes_to_back() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=8, policy=OverflowPolicy.CONFLATE)
    await bus.publish("bar.A", 1)
    await bus.publish("bar.B", 1)
    assert sub.get_nowait() == ("bar.A", 1)
    # Act
    await bus.publish("bar.A", 2)
    # Assert
    assert drain(sub) == [("bar.B", 1), ("bar.A", 2)]
    assert sub.stats().conflated == 0


async def test_publish_when_conflate_custom_key_then_conflates_across_topics_by_key() -> None:
    # Arrange
    def by_symbol(topic: str, message: object) -> Hashable:
        assert isinstance(message, dict)
        symbol: str = message["symbol"]
        return symbol

    bus = MessageBus()
    sub = bus.subscribe(
        "quote.>", name="s", capacity=8, policy=OverflowPolicy.CONFLATE, key=by_symbol
    )
    # Act
    await bus.publish("quote.venue1", {"symbol": "AAPL", "px": 1})
    await bus.publish("quote.venue2", {"symbol": "MSFT", "px": 2})
    await bus.publish("quote.venue2", {"symbol": "AAPL", "px": 3})
    # Assert
    assert drain(sub) == [
        ("quote.venue2", {"symbol": "AAPL", "px": 3}),
        ("quote.venue2", {"symbol": "MSFT", "px": 2}),
    ]
    assert sub.stats().conflated == 1


async def test_publish_when_conflate_full_and_new_key_then_oldest_evicted_as_dropped() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=2, policy=OverflowPolicy.CONFLATE)
    await bus.publish("bar.A", 1)
    await bus.publish("bar.B", 1)
    # Act
    await bus.publish("bar.B", 2)  # full, existing key: replaced in place, nothing evicted
    await bus.publish("bar.C", 1)  # full, new key: the oldest (bar.A) goes
    # Assert
    assert drain(sub) == [("bar.B", 2), ("bar.C", 1)]
    stats = sub.stats()
    assert (stats.conflated, stats.dropped) == (1, 2)


async def test_publish_batch_when_conflate_then_same_as_one_by_one() -> None:
    # Arrange
    batched_bus, single_bus = MessageBus(), MessageBus()
    batched = batched_bus.subscribe("bar.>", name="b", capacity=2, policy=OverflowPolicy.CONFLATE)
    single = single_bus.subscribe("bar.>", name="s", capacity=2, policy=OverflowPolicy.CONFLATE)
    items: list[tuple[str, object]] = [("bar.A", 1), ("bar.B", 1), ("bar.A", 2), ("bar.C", 1)]
    # Act
    await batched_bus.publish_batch(items)
    for topic, message in items:
        await single_bus.publish(topic, message)
    # Assert
    # A2 replaced A1 in place (front), then the new key C evicted the oldest entry: A2.
    expected = [("bar.B", 1), ("bar.C", 1)]
    assert drain(batched) == drain(single) == expected
    assert (batched.stats().conflated, batched.stats().dropped) == (1, 2)
    assert (single.stats().conflated, single.stats().dropped) == (1, 2)


def test_subscribe_when_key_given_without_conflate_then_value_error() -> None:
    # Arrange
    bus = MessageBus()
    # Act / Assert
    with pytest.raises(ValueError, match="conflate"):
        bus.subscribe("bar.>", name="s", policy=OverflowPolicy.BLOCK, key=lambda t, m: t)


def test_subscribe_when_defaults_then_bus_capacity_and_policy_apply() -> None:
    # Arrange
    bus = MessageBus(default_capacity=7, default_policy=OverflowPolicy.DROP_OLDEST)
    # Act
    sub = bus.subscribe("bar.>", name="s")
    explicit = bus.subscribe("bar.>", name="t", capacity=3, policy=OverflowPolicy.CONFLATE)
    # Assert
    assert (sub.capacity, sub.policy, sub.name, sub.pattern) == (
        7,
        OverflowPolicy.DROP_OLDEST,
        "s",
        "bar.>",
    )
    assert (explicit.capacity, explicit.policy) == (3, OverflowPolicy.CONFLATE)


@pytest.mark.parametrize("capacity", [0, -1])
def test_subscribe_when_capacity_not_positive_then_value_error(capacity: int) -> None:
    # Arrange
    bus = MessageBus()
    # Act / Assert
    with pytest.raises(ValueError, match="capacity"):
        bus.subscribe("bar.>", name="s", capacity=capacity)
