"""Subscribe/close semantics and correctness of wake-ups under cancellation."""

from __future__ import annotations

import asyncio

import pytest

from engine.bus import MessageBus, OverflowPolicy, SubscriptionClosed

from .helpers import drain, settle

# ---------------------------------------------------------------- names and close


def test_subscribe_when_name_taken_then_value_error() -> None:
    # Arrange
    bus = MessageBus()
    bus.subscribe("bar.>", name="agent")
    # Act / Assert
    with pytest.raises(ValueError, match="duplicate subscription name 'agent'"):
        bus.subscribe("signal.>", name="agent")


def test_subscribe_when_previous_holder_closed_then_name_reusable() -> None:
    # Arrange
    bus = MessageBus()
    bus.subscribe("bar.>", name="agent").close()
    # Act
    again = bus.subscribe("signal.>", name="agent")
    # Assert
    assert bus.subscription("agent") is again


async def test_get_when_closed_while_waiting_then_subscription_closed() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s")
    getter = asyncio.create_task(sub.get())
    batch_getter = asyncio.create_task(sub.get_batch(5))
    await settle()
    # Act
    sub.close()
    await settle()
    # Assert
    with pytest.raises(SubscriptionClosed, match="'s'"):
        getter.result()
    with pytest.raises(SubscriptionClosed):
        batch_getter.result()


async def test_get_when_closed_with_pending_messages_then_drains_before_raising() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s")
    await bus.publish("bar.A", 1)
    await bus.publish("bar.A", 2)
    # Act
    bus.unsubscribe(sub)
    # Assert
    assert sub.closed
    assert await sub.get() == ("bar.A", 1)
    assert sub.get_nowait() == ("bar.A", 2)
    with pytest.raises(SubscriptionClosed):
        sub.get_nowait()
    with pytest.raises(SubscriptionClosed):
        await sub.get()


async def test_iterate_when_closed_then_iteration_ends_after_pending_messages() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s")
    await bus.publish("bar.A", 1)
    sub.close()
    # Act
    seen = [message async for _topic, message in sub]
    # Assert
    assert seen == [1]


async def test_publish_when_subscription_closed_then_not_routed_there() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s")
    await bus.publish("bar.A", 1)
    sub.close()
    # Act
    await bus.publish("bar.A", 2)
    # Assert
    assert drain(sub) == [("bar.A", 1)]
    assert bus.stats().topics["bar.A"].unrouted == 1
    assert "s" not in bus.stats().subscriptions


async def test_close_when_publisher_blocked_then_publisher_released_and_message_dropped() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=1, policy=OverflowPolicy.BLOCK)
    await bus.publish("bar.A", 1)
    publisher = asyncio.create_task(bus.publish("bar.A", 2))
    await settle()
    assert not publisher.done()
    # Act
    sub.close()
    await settle()
    # Assert
    assert publisher.done()
    assert publisher.exception() is None
    assert drain(sub) == [("bar.A", 1)]
    assert sub.stats().dropped == 1
    assert sub.stats().blocked_publishers == 0


def test_close_when_called_twice_then_idempotent() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s")
    # Act
    sub.close()
    sub.close()
    # Assert
    assert sub.closed
    assert bus.stats().subscriptions == {}


def test_unsubscribe_when_subscription_of_other_bus_then_value_error() -> None:
    # Arrange
    sub = MessageBus().subscribe("bar.>", name="s")
    # Act / Assert
    with pytest.raises(ValueError, match="another bus"):
        MessageBus().unsubscribe(sub)


def test_get_nowait_when_empty_and_open_then_queue_empty() -> None:
    # Arrange
    sub = MessageBus().subscribe("bar.>", name="s")
    # Act / Assert
    with pytest.raises(asyncio.QueueEmpty):
        sub.get_nowait()


async def test_get_batch_when_max_items_not_positive_then_value_error() -> None:
    # Arrange
    sub = MessageBus().subscribe("bar.>", name="s")
    # Act / Assert
    with pytest.raises(ValueError, match="max_items"):
        await sub.get_batch(0)


# ---------------------------------------------------------------- cancellation: consumers


async def test_get_when_cancelled_while_waiting_then_next_message_still_delivered() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s")
    cancelled = asyncio.create_task(sub.get())
    await settle()
    cancelled.cancel()
    await settle()
    waiting = asyncio.create_task(sub.get())
    await settle()
    # Act
    await bus.publish("bar.A", 1)
    await settle()
    # Assert
    assert cancelled.cancelled()
    assert waiting.result() == ("bar.A", 1)
    assert sub.depth == 0


async def test_get_when_woken_then_cancelled_before_running_then_wake_passed_to_next_getter() -> (
    None
):
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s")
    first = asyncio.create_task(sub.get())
    second = asyncio.create_task(sub.get_batch(10))
    await settle()
    # Act: the publish wakes `first`; it is cancelled before it can take the message.
    bus.publish_nowait("bar.A", 1)
    first.cancel()
    await settle()
    # Assert: the wake-up was not swallowed; the message is delivered exactly once.
    assert first.cancelled()
    assert second.done()
    assert second.result() == [("bar.A", 1)]
    assert sub.depth == 0
    assert sub.stats().delivered == 1


async def test_iterate_when_consumer_cancelled_then_no_message_lost() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s")
    seen: list[object] = []

    async def consume() -> None:
        async for _topic, message in sub:
            seen.append(message)

    consumer = asyncio.create_task(consume())
    await settle()
    bus.publish_nowait("bar.A", 1)
    consumer.cancel()  # woken by the publish, cancelled before it runs
    await settle()
    # Act
    bus.publish_nowait("bar.A", 2)
    # Assert
    assert seen == []
    assert drain(sub) == [("bar.A", 1), ("bar.A", 2)]


# ---------------------------------------------------------------- cancellation: publishers


async def test_publish_when_cancelled_while_blocked_then_message_withdrawn_and_counted() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=1, policy=OverflowPolicy.BLOCK)
    other = bus.subscribe("bar.>", name="other", capacity=10)
    await bus.publish("bar.A", 0)
    publisher = asyncio.create_task(bus.publish("bar.A", 1))
    await settle()
    # Act
    publisher.cancel()
    await settle()
    # Assert
    assert publisher.cancelled()
    assert sub.stats().blocked_publishers == 0
    assert sub.get_nowait() == ("bar.A", 0)
    assert sub.depth == 0
    assert sub.stats().dropped == 1
    # The subscriber with room had already accepted it: exactly once, never duplicated.
    assert drain(other) == [("bar.A", 0), ("bar.A", 1)]
    await bus.publish("bar.A", 2)
    assert drain(sub) == [("bar.A", 2)]


async def test_publish_when_cancelled_then_room_made_then_next_publisher_admitted() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=1, policy=OverflowPolicy.BLOCK)
    await bus.publish("bar.A", 0)
    cancelled = asyncio.create_task(bus.publish("bar.A", 1))
    await settle()
    waiting = asyncio.create_task(bus.publish("bar.A", 2))
    await settle()
    # Act: cancel, then make room before the cancelled task gets to run its cleanup.
    cancelled.cancel()
    assert sub.get_nowait() == ("bar.A", 0)
    await settle()
    # Assert: the cancelled message is never delivered; the next one takes the room.
    assert cancelled.cancelled()
    assert waiting.done()
    assert drain(sub) == [("bar.A", 2)]
    assert sub.stats().dropped == 1


async def test_publish_when_admitted_then_cancelled_before_resuming_then_delivered_once() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=1, policy=OverflowPolicy.BLOCK)
    await bus.publish("bar.A", 0)
    publisher = asyncio.create_task(bus.publish("bar.A", 1))
    await settle()
    # Act: room is made (message 1 moves in), then the publisher is cancelled before it resumes.
    assert sub.get_nowait() == ("bar.A", 0)
    publisher.cancel()
    await settle()
    # Assert
    assert publisher.cancelled()
    assert drain(sub) == [("bar.A", 1)]
    assert sub.stats().dropped == 0


async def test_publish_batch_when_cancelled_partly_admitted_then_rest_withdrawn_in_order() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s", capacity=2, policy=OverflowPolicy.BLOCK)
    publisher = asyncio.create_task(bus.publish_batch([("bar.A", i) for i in range(6)]))
    await settle()
    assert sub.get_nowait() == ("bar.A", 0)  # admits message 2
    await settle()
    # Act
    publisher.cancel()
    await settle()
    # Assert
    assert publisher.cancelled()
    assert drain(sub) == [("bar.A", 1), ("bar.A", 2)]
    assert sub.stats().dropped == 3
    assert sub.stats().blocked_publishers == 0


# ---------------------------------------------------------------- competing consumers


async def test_publish_batch_when_two_consumers_wait_on_one_subscription_then_both_woken() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe("bar.>", name="s")
    first = asyncio.create_task(sub.get())
    second = asyncio.create_task(sub.get())
    await settle()
    # Act: one empty->non-empty edge, two messages, two waiting consumers.
    await bus.publish_batch([("bar.A", 0), ("bar.A", 1)])
    await settle()
    # Assert
    assert first.done()
    assert second.done()
    assert sorted([first.result(), second.result()]) == [("bar.A", 0), ("bar.A", 1)]
