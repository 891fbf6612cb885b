"""The in-process message bus: dotted topics, pattern subscriptions, bounded mailboxes.

Why it exists: sources, agents, stages and the Kafka bridge all run on one event loop and must
exchange messages without copying, without threads and without unbounded memory. A thin layer
over `asyncio.Queue` would cost one coroutine call per subscriber per message and cannot express
`drop_oldest` or `conflate`; this module owns its mailboxes (a deque plus waiter futures) so the
per-message cost is one dict lookup for routing plus one `deque.append` per matching subscriber.

Trade-offs and decisions (each is tested in tests/bus):

- Routing: topic -> tuple of matching subscriptions is resolved once and cached in the per-topic
  counter record; subscribe/unsubscribe clear the cache (rare, O(topics)). Identical routes are
  interned so `publish_batch` can detect "the whole batch goes to the same subscribers" by
  identity. The number of tracked topics is capped (`max_topics`); publishes to further new
  topics are pattern-matched every time and counted in aggregate `untracked_*` counters, so
  neither the cache nor the metrics label set grows with arbitrary topic cardinality.
- Topics are validated when first seen, not on every publish (validated data enters at the edges).
- Ordering: every publish is placed into every matching mailbox synchronously, before the
  publisher awaits anything. A `block` mailbox that is full (or already has publishers waiting)
  parks the message in a FIFO of waiting publishers, and a consumer that makes room moves it in
  (hand-off). Hence all subscribers see one publish order, even with several concurrent
  publishers, and a parked message can never be overtaken. The mailbox itself never holds more
  than `capacity` items; parked messages are held by their suspended publisher, one entry per
  blocked publisher, so they are bounded by the number of publisher tasks.
- Cancellation: a cancelled `publish` withdraws whatever was still parked (counted as dropped on
  that subscription) and re-raises; what was already accepted stays, exactly once. A cancelled
  `get` re-issues the wake-up it may have consumed, so no waiter swallows it.
- `publish_nowait` never blocks and never half-delivers: if a matching `block` mailbox is full it
  raises `MailboxFull` before delivering to anyone (nothing is counted as published).
- `conflate`: a newer message with the same key replaces the pending one in place, keeping the
  position of the first pending entry of that key (a hot key cannot starve others, and consumers
  see the freshest value at its original turn). A new key arriving at a full conflating mailbox
  evicts the oldest entry. Replacements count as `conflated` and also as `dropped` (dropped
  counts every accepted message that will never be delivered).
- High-water depth is tracked by consumers just before they take items: between two takes depth
  never decreases, so this sees every maximum without a per-publish check.
- Wake-ups: a consumer is woken only when its mailbox goes from empty to non-empty and it is
  waiting; a consumer that is already scheduled is not woken again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from config.enums import OverflowPolicy

__all__ = [
    "BusStats",
    "Delivery",
    "KeyFunc",
    "MailboxFull",
    "MessageBus",
    "OverflowPolicy",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionStats",
    "TopicStats",
    "topic_matches",
    "validate_pattern",
    "validate_topic",
]

Delivery = tuple[str, object]
"""What a subscriber receives: (topic, message)."""

KeyFunc = Callable[[str, object], Hashable]
"""Conflation key of a (topic, message); the default is the topic."""

_WILDCARDS = frozenset("*>")


class SubscriptionClosed(Exception):
    """Raised by `get`/`get_batch`/`get_nowait` on a closed subscription once it is drained."""

    def __init__(self, name: str) -> None:
        super().__init__(f"subscription {name!r} is closed and drained")
        self.name = name


class MailboxFull(Exception):
    """Raised by `publish_nowait` when a matching `block` mailbox has no room.

    Nothing was delivered to any subscription and nothing was counted.
    """

    def __init__(self, topic: str, subscription: str, capacity: int) -> None:
        super().__init__(
            f"publish_nowait({topic!r}): block mailbox of subscription {subscription!r} is full "
            f"(capacity {capacity}); use 'await bus.publish()' to wait for room"
        )
        self.topic = topic
        self.subscription = subscription
        self.capacity = capacity


# --------------------------------------------------------------------------- topics and patterns


def _bad_segment(segment: str) -> bool:
    return not segment or not segment.isprintable() or any(ch.isspace() for ch in segment)


def validate_topic(topic: str) -> tuple[str, ...]:
    """Return the segments of a concrete topic, or raise ValueError naming it."""
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, got {type(topic).__name__}")
    segments = tuple(topic.split("."))
    for segment in segments:
        if _bad_segment(segment):
            raise ValueError(
                f"invalid topic {topic!r}: segments must be non-empty, printable, without spaces"
            )
        if not _WILDCARDS.isdisjoint(segment):
            raise ValueError(
                f"invalid topic {topic!r}: wildcards '*' and '>' are only allowed in "
                "subscription patterns, not in published topics"
            )
    return segments


def validate_pattern(pattern: str) -> tuple[str, ...]:
    """Return the tokens of a subscription pattern, or raise ValueError naming it."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
    tokens = tuple(pattern.split("."))
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        if _bad_segment(token):
            raise ValueError(
                f"invalid pattern {pattern!r}: segments must be non-empty, printable, "
                "without spaces"
            )
        if token == ">":
            if i != last:
                raise ValueError(f"invalid pattern {pattern!r}: '>' is only allowed as last token")
        elif token != "*" and not _WILDCARDS.isdisjoint(token):
            raise ValueError(
                f"invalid pattern {pattern!r}: a wildcard must be a whole segment ({token!r})"
            )
    return tokens


def _match(tokens: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    n = len(tokens)
    if tokens[-1] == ">":
        # '>' needs at least one segment of its own.
        if len(segments) < n:
            return False
        n -= 1
    elif len(segments) != n:
        return False
    for i in range(n):
        token = tokens[i]
        if token != "*" and token != segments[i]:
            return False
    return True


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether `topic` is delivered to a subscription on `pattern` (both are validated)."""
    return _match(validate_pattern(pattern), validate_topic(topic))


# --------------------------------------------------------------------------- mailboxes


class _Mailbox(Protocol):
    """The deque subset a subscription needs; `deque` and `_KeyedQueue` both provide it."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Delivery]: ...
    def append(self, item: Delivery, /) -> None: ...
    def extend(self, items: Iterable[Delivery], /) -> None: ...
    def popleft(self) -> Delivery: ...
    def clear(self) -> None: ...


def _topic_key(topic: str, message: object) -> Hashable:
    return topic


class _KeyedQueue:
    """Conflating FIFO: at most one pending entry per key, replaced in place, oldest out first.

    OrderedDict because re-assigning an existing key keeps its position and popitem(last=False)
    is O(1), where a plain dict's "first item" degrades as deleted slots accumulate.
    """

    __slots__ = ("_capacity", "_entries", "_key", "conflated", "evicted")

    def __init__(self, capacity: int, key: KeyFunc) -> None:
        self._entries: OrderedDict[Hashable, Delivery] = OrderedDict()
        self._capacity = capacity
        self._key = key
        self.conflated = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Delivery]:
        return iter(self._entries.values())

    def append(self, item: Delivery, /) -> None:
        entries = self._entries
        key = self._key(item[0], item[1])
        if key in entries:
            entries[key] = item
            self.conflated += 1
            return
        if len(entries) >= self._capacity:
            entries.popitem(last=False)
            self.evicted += 1
        entries[key] = item

    def extend(self, items: Iterable[Delivery], /) -> None:
        append = self.append
        for item in items:
            append(item)

    def popleft(self) -> Delivery:
        return self._entries.popitem(last=False)[1]

    def clear(self) -> None:
        self._entries.clear()


class _Parked:
    """Messages a blocked publisher is waiting to hand to one `block` mailbox."""

    __slots__ = ("future", "items", "sub")

    def __init__(self, sub: Subscription, items: deque[Delivery], future: asyncio.Future[None]):
        self.sub = sub
        self.items = items
        self.future = future


async def _wait_parked(parked: list[_Parked]) -> None:
    try:
        for entry in parked:
            await entry.future
    except BaseException:
        for entry in parked:
            entry.sub._withdraw(entry)
        raise


# --------------------------------------------------------------------------- subscription


class Subscription:
    """A named pattern subscription with its own bounded mailbox. Created by `MessageBus`."""

    __slots__ = (
        "_bus",
        "_capacity",
        "_closed",
        "_delivered",
        "_dropped",
        "_getters",
        "_high_water",
        "_name",
        "_parked",
        "_pattern",
        "_policy",
        "_queue",
        "_tokens",
    )

    def __init__(
        self,
        bus: MessageBus,
        name: str,
        pattern: str,
        tokens: tuple[tuple[str, ...], ...],
        capacity: int,
        policy: OverflowPolicy,
        key: KeyFunc | None,
    ) -> None:
        self._bus = bus
        self._name = name
        self._pattern = pattern
        # One mailbox may serve several patterns: the agent runtime needs its data topics and
        # the source watermarks in a single publish order, which separate mailboxes cannot give.
        self._tokens = tokens
        self._capacity = capacity
        self._policy = policy
        # maxlen also on block mailboxes: the code never appends past capacity there, and the
        # structural bound turns a future bug into a visible drop rather than unbounded growth.
        self._queue: _Mailbox
        if policy is OverflowPolicy.CONFLATE:
            self._queue = _KeyedQueue(capacity, key or _topic_key)
        else:
            fifo: deque[Delivery] = deque(maxlen=capacity)
            self._queue = fifo
        self._getters: deque[asyncio.Future[None]] = deque()
        # Invariant: _parked is non-empty only while the mailbox is full; publish relies on it to
        # decide the fast path with a single length check.
        self._parked: deque[_Parked] = deque()
        self._closed = False
        self._delivered = 0
        self._dropped = 0
        self._high_water = 0

    # ---- introspection

    @property
    def name(self) -> str:
        return self._name

    @property
    def pattern(self) -> str:
        return self._pattern

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def policy(self) -> OverflowPolicy:
        return self._policy

    @property
    def depth(self) -> int:
        """Messages waiting in the mailbox (never more than `capacity`)."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._queue)

    def __repr__(self) -> str:
        return (
            f"Subscription(name={self._name!r}, pattern={self._pattern!r}, "
            f"policy={self._policy.value}, depth={len(self._queue)}/{self._capacity}"
            f"{', closed' if self._closed else ''})"
        )

    # ---- consumer side

    async def get(self) -> Delivery:
        """Next (topic, message); waits if empty; raises SubscriptionClosed once closed+drained."""
        q = self._queue
        if not q:
            await self._wait_nonempty()
        n = len(q)
        if n > self._high_water:
            self._high_water = n
        item = q.popleft()
        self._delivered += 1
        if self._parked:
            self._admit()
        return item

    def get_nowait(self) -> Delivery:
        """Next (topic, message); raises asyncio.QueueEmpty, or SubscriptionClosed once drained."""
        q = self._queue
        if not q:
            if self._closed:
                raise SubscriptionClosed(self._name)
            raise asyncio.QueueEmpty(f"subscription {self._name!r} has no pending message")
        n = len(q)
        if n > self._high_water:
            self._high_water = n
        item = q.popleft()
        self._delivered += 1
        if self._parked:
            self._admit()
        return item

    async def get_batch(self, max_items: int) -> list[Delivery]:
        """Wait for at least one message, then return up to `max_items` of them in order."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        q = self._queue
        if not q:
            await self._wait_nonempty()
        n = len(q)
        if n > self._high_water:
            self._high_water = n
        if n <= max_items:
            batch = list(q)
            q.clear()
        else:
            pop = q.popleft
            batch = [pop() for _ in range(max_items)]
        self._delivered += len(batch)
        if self._parked:
            self._admit()
        return batch

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        # Duplicates get() instead of calling it: one coroutine frame per message, not two.
        q = self._queue
        if not q:
            try:
                await self._wait_nonempty()
            except SubscriptionClosed:
                raise StopAsyncIteration from None
        n = len(q)
        if n > self._high_water:
            self._high_water = n
        item = q.popleft()
        self._delivered += 1
        if self._parked:
            self._admit()
        return item

    def close(self) -> None:
        """Unsubscribe; pending messages can still be drained, blocked publishers are released."""
        self._bus.unsubscribe(self)

    async def _wait_nonempty(self) -> None:
        q = self._queue
        getters = self._getters
        while not q:
            if self._closed:
                raise SubscriptionClosed(self._name)
            waiter = asyncio.get_running_loop().create_future()
            getters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                with suppress(ValueError):
                    getters.remove(waiter)
                # If we were woken just before being cancelled, that wake-up was meant for
                # whoever takes the next message: pass it on instead of swallowing it.
                if q and getters:
                    self._wake_getter()
                raise
        if getters and len(q) > 1:
            # Competing consumers: one wake per empty->non-empty edge, so chain it.
            self._wake_getter()

    def _wake_getter(self) -> None:
        getters = self._getters
        while getters:
            waiter = getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # ---- publisher side (called by MessageBus)

    def _offer(self, item: Delivery) -> _Parked | None:
        """Slow path for one message: mailbox full (or conflating). Returns a parked entry to
        await when the publisher must wait."""
        policy = self._policy
        q = self._queue
        if policy is OverflowPolicy.BLOCK:
            entry = _Parked(self, deque((item,)), asyncio.get_running_loop().create_future())
            self._parked.append(entry)
            return entry
        if policy is OverflowPolicy.DROP_OLDEST:
            if len(q) >= self._capacity:
                self._dropped += 1
            q.append(item)  # maxlen evicts the oldest
        else:
            q.append(item)  # _KeyedQueue conflates or evicts and counts
        if self._getters:
            self._wake_getter()
        return None

    def _offer_many(self, items: list[Delivery]) -> _Parked | None:
        q = self._queue
        count = len(items)
        policy = self._policy
        if policy is OverflowPolicy.BLOCK:
            room = 0 if self._parked else self._capacity - len(q)
            if room >= count:
                q.extend(items)
                entry = None
            else:
                if room > 0:
                    q.extend(items[:room])
                rest = deque(items[room:]) if room > 0 else deque(items)
                entry = _Parked(self, rest, asyncio.get_running_loop().create_future())
                self._parked.append(entry)
        else:
            if policy is OverflowPolicy.DROP_OLDEST:
                overflow = len(q) + count - self._capacity
                if overflow > 0:
                    self._dropped += overflow
            q.extend(items)
            entry = None
        if self._getters and q:
            self._wake_getter()
        return entry

    def _admit(self) -> None:
        """Move parked messages into the room consumers just made, oldest publisher first."""
        q = self._queue
        parked = self._parked
        room = self._capacity - len(q)
        while room > 0 and parked:
            entry = parked[0]
            items = entry.items
            if entry.future.cancelled():
                # The publisher was cancelled and is about to withdraw: never deliver what a
                # cancelled publish may retry.
                parked.popleft()
                self._dropped += len(items)
                items.clear()
                continue
            if len(items) <= room:
                parked.popleft()
                room -= len(items)
                q.extend(items)
                items.clear()
                entry.future.set_result(None)
            else:
                for _ in range(room):
                    q.append(items.popleft())
                room = 0
        if self._getters and q:
            self._wake_getter()

    def _withdraw(self, entry: _Parked) -> None:
        if entry.items:
            with suppress(ValueError):
                self._parked.remove(entry)
            self._dropped += len(entry.items)
            entry.items.clear()

    def _shut(self) -> None:
        self._closed = True
        for entry in self._parked:
            self._dropped += len(entry.items)
            entry.items.clear()
            if not entry.future.done():
                entry.future.set_result(None)
        self._parked.clear()
        for waiter in self._getters:
            if not waiter.done():
                waiter.set_result(None)
        self._getters.clear()

    def stats(self) -> SubscriptionStats:
        """Snapshot of this subscription's counters (also readable after close)."""
        q = self._queue
        depth = len(q)
        conflated = q.conflated if isinstance(q, _KeyedQueue) else 0
        evicted = q.evicted if isinstance(q, _KeyedQueue) else 0
        return SubscriptionStats(
            name=self._name,
            pattern=self._pattern,
            policy=self._policy,
            capacity=self._capacity,
            depth=depth,
            high_water=max(self._high_water, depth),
            delivered=self._delivered,
            dropped=self._dropped + conflated + evicted,
            conflated=conflated,
            blocked_publishers=len(self._parked),
        )


# --------------------------------------------------------------------------- stats


@dataclass(frozen=True, slots=True)
class TopicStats:
    topic: str
    published: int
    """Publishes to this topic (each message in a batch counts once)."""
    unrouted: int
    """Publishes that matched no subscription."""


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    name: str
    pattern: str
    policy: OverflowPolicy
    capacity: int
    depth: int
    high_water: int
    delivered: int
    """Messages handed to the consumer."""
    dropped: int
    """Accepted messages that will never be delivered: evicted, conflated, withdrawn, discarded."""
    conflated: int
    """The part of `dropped` replaced by a newer message with the same key."""
    blocked_publishers: int
    """Publishers currently waiting for room in this (block) mailbox."""


@dataclass(frozen=True, slots=True)
class BusStats:
    """Point-in-time copy of every bus counter; safe to keep and compare."""

    topics: Mapping[str, TopicStats]
    subscriptions: Mapping[str, SubscriptionStats]
    """Open subscriptions by name."""
    untracked_published: int
    """Publishes to topics beyond `max_topics` (not counted per topic)."""
    untracked_unrouted: int

    @property
    def published(self) -> int:
        return sum(t.published for t in self.topics.values()) + self.untracked_published

    @property
    def unrouted(self) -> int:
        return sum(t.unrouted for t in self.topics.values()) + self.untracked_unrouted


class _TopicState:
    """Counters of one topic plus its cached route (None = must be resolved)."""

    __slots__ = ("published", "route", "unrouted")

    def __init__(self) -> None:
        self.published = 0
        self.unrouted = 0
        self.route: tuple[Subscription, ...] | None = None


# --------------------------------------------------------------------------- bus


class MessageBus:
    """Routes (topic, message) to every subscription whose pattern matches, in publish order."""

    __slots__ = (
        "_default_capacity",
        "_default_policy",
        "_interned",
        "_max_topics",
        "_subs",
        "_topics",
        "_untracked",
    )

    def __init__(
        self,
        *,
        default_capacity: int = 1024,
        default_policy: OverflowPolicy = OverflowPolicy.BLOCK,
        max_topics: int = 65_536,
    ) -> None:
        if default_capacity < 1:
            raise ValueError(f"default_capacity must be >= 1, got {default_capacity}")
        if max_topics < 0:
            raise ValueError(f"max_topics must be >= 0, got {max_topics}")
        self._default_capacity = default_capacity
        self._default_policy = OverflowPolicy(default_policy)
        self._max_topics = max_topics
        # Insertion order = subscription order = delivery order within one publish (determinism).
        self._subs: dict[str, Subscription] = {}
        self._topics: dict[str, _TopicState] = {}
        self._interned: dict[tuple[Subscription, ...], tuple[Subscription, ...]] = {}
        self._untracked = _TopicState()

    # ---- subscriptions

    def subscribe(
        self,
        pattern: str | Sequence[str],
        *,
        name: str,
        capacity: int | None = None,
        policy: OverflowPolicy | None = None,
        key: KeyFunc | None = None,
    ) -> Subscription:
        """Open a subscription; raises ValueError on a bad pattern or a duplicate name.

        `key` (conflate only) runs inside publish: an exception from it propagates to the
        publisher, after the message may already be in mailboxes earlier in the route. A task
        must not `await publish` to a block subscription that only it consumes: when that
        mailbox is full it waits for itself.

        `pattern` may be several patterns: a topic matching any of them is delivered once, and
        all of them share one mailbox (one publish order). `sub.pattern` then reads
        "p1 | p2 | ...".
        """
        patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
        if not patterns:
            raise ValueError(f"subscription {name!r} needs at least one pattern")
        tokens = tuple(validate_pattern(p) for p in patterns)
        joined = " | ".join(patterns)
        if not name:
            raise ValueError("subscription name must be a non-empty string")
        if name in self._subs:
            raise ValueError(f"duplicate subscription name {name!r}")
        capacity = self._default_capacity if capacity is None else capacity
        if capacity < 1:
            raise ValueError(f"capacity of subscription {name!r} must be >= 1, got {capacity}")
        policy = self._default_policy if policy is None else OverflowPolicy(policy)
        if key is not None and policy is not OverflowPolicy.CONFLATE:
            raise ValueError(f"key= only applies to the conflate policy (subscription {name!r})")
        sub = Subscription(self, name, joined, tokens, capacity, policy, key)
        self._subs[name] = sub
        self._invalidate_routes()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Close `sub` (idempotent): releases blocked publishers; queued messages stay readable."""
        if sub._bus is not self:
            raise ValueError(f"subscription {sub.name!r} belongs to another bus")
        if self._subs.get(sub.name) is sub:
            del self._subs[sub.name]
            self._invalidate_routes()
        sub._shut()

    def _invalidate_routes(self) -> None:
        # Clearing (rather than bumping a version) also drops references to closed subscriptions.
        for state in self._topics.values():
            state.route = None
        self._interned.clear()

    def _resolve(self, topic: str) -> tuple[_TopicState, tuple[Subscription, ...]]:
        state = self._topics.get(topic)
        if state is None:
            segments = validate_topic(topic)
            if len(self._topics) < self._max_topics:
                state = self._topics[topic] = _TopicState()
            else:
                state = self._untracked
        else:
            segments = tuple(topic.split("."))
        route = tuple(
            sub
            for sub in self._subs.values()
            if any(_match(tokens, segments) for tokens in sub._tokens)
        )
        if state is not self._untracked:
            # Interned so publish_batch recognises a batch with one route by identity; untracked
            # topics are not interned, which keeps this dict bounded by the tracked topics.
            route = self._interned.setdefault(route, route)
            state.route = route
        return state, route

    # ---- publishing

    async def publish(self, topic: str, message: object) -> None:
        """Deliver to every matching subscription; awaits only while a block mailbox is full."""
        state = self._topics.get(topic)
        if state is None or (route := state.route) is None:
            state, route = self._resolve(topic)
        state.published += 1
        if not route:
            state.unrouted += 1
            return
        item = (topic, message)
        parked: list[_Parked] | None = None
        for sub in route:
            q = sub._queue
            # Below capacity every policy just appends (a conflating mailbox replaces in
            # append); only a full mailbox needs its policy, in _offer.
            if len(q) < sub._capacity:
                q.append(item)
                if sub._getters:
                    sub._wake_getter()
            else:
                entry = sub._offer(item)
                if entry is not None:
                    if parked is None:
                        parked = [entry]
                    else:
                        parked.append(entry)
        if parked is not None:
            await _wait_parked(parked)

    def publish_nowait(self, topic: str, message: object) -> None:
        """Deliver without waiting; raises MailboxFull (delivering nothing) if a matching
        block mailbox is full."""
        state = self._topics.get(topic)
        if state is None or (route := state.route) is None:
            state, route = self._resolve(topic)
        for sub in route:
            if sub._policy is OverflowPolicy.BLOCK and len(sub._queue) >= sub._capacity:
                raise MailboxFull(topic, sub._name, sub._capacity)
        state.published += 1
        if not route:
            state.unrouted += 1
            return
        item = (topic, message)
        for sub in route:
            entry = sub._offer_many([item])
            # Checked above: a block mailbox had room, so nothing can have been parked.
            assert entry is None

    async def publish_batch(self, items: Sequence[tuple[str, object]]) -> None:
        """Publish many (topic, message) pairs with one routing pass and one wake-up per
        subscriber. Same ordering as publishing them one by one; the tuples are delivered
        as given. An invalid topic raises before anything is delivered or counted."""
        count = len(items)
        if not count:
            return
        topics = self._topics
        states: list[_TopicState] = []
        routes: list[tuple[Subscription, ...]] = []
        add_state = states.append
        add_route = routes.append
        for item in items:
            topic = item[0]
            state = topics.get(topic)
            if state is None or (route := state.route) is None:
                state, route = self._resolve(topic)
            add_state(state)
            add_route(route)
        for state, route in zip(states, routes, strict=True):
            state.published += 1
            if not route:
                state.unrouted += 1
        first = routes[0]
        parked: list[_Parked] = []
        if routes.count(first) == count:
            # Common case: the whole batch goes to the same subscribers.
            if first:
                batch = items if isinstance(items, list) else list(items)
                for sub in first:
                    entry = sub._offer_many(batch)
                    if entry is not None:
                        parked.append(entry)
        else:
            per_sub: dict[Subscription, list[Delivery]] = {}
            for item, route in zip(items, routes, strict=True):
                for sub in route:
                    bucket = per_sub.get(sub)
                    if bucket is None:
                        per_sub[sub] = [item]
                    else:
                        bucket.append(item)
            for sub, bucket in per_sub.items():
                entry = sub._offer_many(bucket)
                if entry is not None:
                    parked.append(entry)
        if parked:
            await _wait_parked(parked)

    # ---- introspection

    def stats(self) -> BusStats:
        """Snapshot of all counters (O(topics + subscriptions))."""
        topics = {
            topic: TopicStats(topic, state.published, state.unrouted)
            for topic, state in self._topics.items()
        }
        subs = {name: sub.stats() for name, sub in self._subs.items()}
        return BusStats(
            topics=MappingProxyType(topics),
            subscriptions=MappingProxyType(subs),
            untracked_published=self._untracked.published,
            untracked_unrouted=self._untracked.unrouted,
        )

    def subscription(self, name: str) -> Subscription:
        """The open subscription called `name` (KeyError if none)."""
        return self._subs[name]
