"""A slow `block` subscriber must slow the publisher down, never grow memory."""

from __future__ import annotations

import asyncio

from engine.bus import MessageBus, OverflowPolicy

from .helpers import drain, settle


async def test_publish_when_block_subscriber_slow_then_publisher_suspended_and_depth_bounded() -> (
    None
):
    # Arrange
    bus = MessageBus()
    slow = bus.subscribe("bar.>", name="slow", capacity=4, policy=OverflowPolicy.BLOCK)
    lossy = bus.subscribe("bar.>", name="lossy", capacity=2, policy=OverflowPolicy.DROP_OLDEST)
    published = 0

    async def publisher() -> None:
        nonlocal published
        for i in range(20):
            await bus.publish("bar.A", i)
            published += 1

    # Act
    task = asyncio.create_task(publisher())
    await settle()
    # Assert: the publisher is parked on the full mailbox, not racing ahead.
    assert not task.done()
    assert published == 4
    assert slow.depth == 4
    assert slow.stats().blocked_publishers == 1
    received = []
    max_depth = slow.depth
    for step in range(20):
        received.append(slow.get_nowait()[1])
        await settle()
        max_depth = max(max_depth, slow.depth)
        # Each message taken lets exactly one more publish complete.
        assert published == min(20, 5 + step)
    assert task.done()
    assert received == list(range(20))
    assert max_depth <= slow.capacity
    assert slow.stats().high_water == slow.capacity
    assert slow.stats().dropped == 0
    assert drain(lossy) == [("bar.A", 18), ("bar.A", 19)]


async def test_publish_batch_when_block_subscriber_slow_then_batch_waits_in_order() -> None:
    # Arrange
    bus = MessageBus()
    slow = bus.subscribe("bar.>", name="slow", capacity=3, policy=OverflowPolicy.BLOCK)
    items: list[tuple[str, object]] = [("bar.A", i) for i in range(8)]
    # Act
    task = asyncio.create_task(bus.publish_batch(items))
    await settle()
    # Assert
    assert not task.done()
    assert slow.depth == 3
    first = await slow.get_batch(2)
    await settle()
    assert not task.done()
    assert slow.depth == 3
    rest = []
    while not task.done() or slow.depth:
        rest.extend(await slow.get_batch(10))
        assert slow.depth <= slow.capacity
        await settle()
    assert [m for _, m in first + rest] == list(range(8))
    assert slow.stats().high_water == 3


async def test_publish_when_consumer_task_slow_then_publisher_paced_by_consumer_steps() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=2, policy=OverflowPolicy.BLOCK)
    allow = asyncio.Semaphore(0)
    consumed: list[object] = []

    async def consumer() -> None:
        async for _topic, message in sub:
            await allow.acquire()  # each message needs an explicit go-ahead
            consumed.append(message)

    async def publisher() -> None:
        for i in range(10):
            await bus.publish("bar.A", i)

    consumer_task = asyncio.create_task(consumer())
    publisher_task = asyncio.create_task(publisher())
    # Act / Assert
    for step in range(10):
        await settle()
        # At most: capacity queued + one held by the consumer + one parked publisher.
        assert sub.depth <= sub.capacity
        assert bus.stats().topics["bar.A"].published <= len(consumed) + sub.capacity + 2
        assert len(consumed) == step
        allow.release()
    await settle()
    assert publisher_task.done()
    sub.close()
    await consumer_task
    assert consumed == list(range(10))
