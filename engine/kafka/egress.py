"""Egress: bus messages out to Kafka, off the hot path, in order, surviving broker outages.

Why it exists: the bus is in-process; anything outside the process (dashboards, remote agents,
audit consumers) sees the engine through Kafka. Publishing to Kafka must never slow down or
break trading, and must never silently lose a message.

How it works:

- The bridge subscribes to the bus like any other component: one bounded mailbox for the
  ``block`` routes (trading topics: a full queue holds the publisher back, nothing is lost) and
  one for the ``drop`` routes (telemetry: a full queue drops the oldest, counted by the bus).
  In-process subscribers are served by the same synchronous publish; the bridge's pump tasks do
  the serialising and producing later, on their own time.
- Healthy ("direct") path: each message is encoded (`engine.kafka.envelope`) and appended to
  the record batch of its Kafka partition, built with aiokafka's batch API (``create_batch``)
  and handed over with ``send_batch`` (acks=all, lz4): one future per batch instead of one
  per record, which is most of what makes the egress cheap. The partition is the one
  aiokafka's default partitioner gives the key (murmur2 over the topic's partitions, cached per
  key; the partitions are re-read from the producer's metadata once per pump wake-up), so one
  key always lands on one partition, in bus publish order; records without a key go
  round-robin. A batch is handed over when it is full and at the end of each pump wake-up (a
  pump takes up to ``batch_size`` bus messages at a time), closed, so aiokafka sends it
  without waiting for ``linger_ms`` (nothing could join it; a partition's next batch is taken
  by aiokafka only once the previous one left, and meanwhile the messages wait in the pump's
  mailbox and make the next batch bigger): batching adds no latency. Hand-overs are
  serialised, so the batches of a partition reach the producer in the order they were filled.
  At most ``max_in_flight`` records (not batches) are taken on this path and unacknowledged,
  records of batches not handed over yet included; a reaper task settles the batch futures
  oldest first.
- The first failed or timed-out batch turns the bridge DEGRADED: every unacknowledged record
  (all records of every batch not settled yet, in the order they were encoded) and every
  later message go to the spool (memory, plus an append-only file so a killed process loses
  nothing). A recovery task reconnects with exponential backoff, probes with one record, has
  the producer re-read the cluster metadata (the broker may be back with another layout), then
  drains the spool oldest first, in batches per partition too; only when it is empty do new
  messages go direct again, so Kafka sees the original order. Records that were in flight
  when the broker failed may have been written anyway: at-least-once, by design; consumers
  drop the duplicates by message id (the ingress does).
- When the spool is full, ``block`` routes wait for room (the engine slows down rather than
  losing a trading message) and ``drop`` routes drop and count.
- Message ids are ``<producer id>-<sequence>``: unique without coordination (the producer id
  carries a random part per process start) and ordered within a producer, so a test or an
  operator can see gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiokafka.partitioner import DefaultPartitioner

from config.enums import OverflowPolicy
from contracts import Contract
from engine.bus import MessageBus, Subscription, SubscriptionClosed, topic_matches
from engine.kafka.envelope import Envelope, encode
from engine.kafka.spool import Spool
from engine.telemetry.logging import Logger

FullPolicy = Literal["block", "drop"]


class BatchBuilder(Protocol):
    """The part of aiokafka's `BatchBuilder` (``producer.create_batch()``) the egress uses."""

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> object | None:
        """Add one record; None when the batch is full (the first record always fits)."""
        ...

    def close(self) -> None:
        """No more records: aiokafka sends a closed batch without waiting for ``linger_ms``."""
        ...


class Producer(Protocol):
    """The part of `aiokafka.AIOKafkaProducer` the egress uses (its batch API)."""

    def create_batch(self) -> BatchBuilder: ...

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]: ...

    async def partitions_for(self, topic: str) -> set[int]: ...

    async def stop(self) -> None: ...


class RecordProducer(Protocol):
    """A producer without the batch API (a test double): the egress drives it record by record
    through `Producer`'s interface, one pseudo-partition per topic, the producer partitioning
    each record itself."""

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[Any]: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class EgressRoute:
    """Bus topics matching `bus_pattern` go to Kafka topic `topic`; `on_full` as in config."""

    bus_pattern: str
    topic: str
    on_full: FullPolicy = "block"


@dataclass(slots=True)
class EgressStats:
    """Counters of one egress bridge (exported as Prometheus metrics)."""

    encoded: int = 0
    delivered: int = 0
    """Records the broker acknowledged (direct and drained from the spool)."""
    spooled: int = 0
    drained: int = 0
    dropped_full: int = 0
    """``drop`` route messages dropped because the spool was full."""
    not_contract: int = 0
    send_failures: int = 0
    reconnect_attempts: int = 0
    outages: int = 0
    lost_at_stop: int = 0
    spool_file_errors: int = 0
    recovered_from_file: int = 0


@dataclass(slots=True)
class _BurstLog:
    """Logs the first event of a burst and counts the rest, so a flood costs one line."""

    log: Logger
    message: str
    suppressed: int = 0
    active: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def hit(self, **fields: Any) -> None:
        if self.active:
            self.suppressed += 1
            return
        self.active = True
        self.log.warning(self.message, **fields)

    def end(self) -> None:
        if self.active and self.suppressed:
            self.log.warning(self.message + " (burst ended)", repeated=self.suppressed)
        self.active = False
        self.suppressed = 0


def _ignore_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _sequence_of(env: Envelope) -> int:
    """The bridge's encoding sequence number of a record it encoded (its message id ends in it)."""
    return int(env.message_id.rpartition("-")[2])


_PARTITIONER = DefaultPartitioner()
_MAX_CACHED_KEYS = 65_536
"""Per topic; beyond it a key's partition is computed per record (murmur2, a few us)."""


class _Topic:
    """What the egress knows about one Kafka topic: its partitions, in the order aiokafka's
    partitioner indexes them (``list`` of the metadata's set, as `AIOKafkaProducer` does), the
    partition of each key seen, and the direct path's open batch per partition."""

    __slots__ = ("keys", "listed", "next_unkeyed", "open", "partitions")

    def __init__(self, partitions: set[int]) -> None:
        self.partitions = partitions
        self.listed = list(partitions)
        self.keys: dict[bytes, int] = {}
        self.next_unkeyed = 0
        self.open: dict[int, _Batch] = {}

    def refresh(self, partitions: set[int]) -> None:
        if partitions != self.partitions:
            self.partitions = partitions
            self.listed = list(partitions)
            self.keys.clear()
            self.next_unkeyed = 0

    def partition_of(self, key: bytes | None) -> int:
        """aiokafka's default partitioner for a keyed record; round-robin without a key (the
        turn advances when such a record was taken, see `took_unkeyed`)."""
        if key is None:
            return self.listed[self.next_unkeyed % len(self.listed)]
        partition = self.keys.get(key)
        if partition is None:
            listed = self.listed
            partition = int(_PARTITIONER(key, listed, listed))
            if len(self.keys) < _MAX_CACHED_KEYS:
                self.keys[key] = partition
        return partition

    def took_unkeyed(self) -> None:
        self.next_unkeyed = (self.next_unkeyed + 1) % len(self.listed)


class _Batch:
    """One record batch of the direct path: records for one partition, in encoding order."""

    __slots__ = ("builder", "envs", "moved", "partition", "topic")

    def __init__(self, builder: BatchBuilder, topic: str, partition: int) -> None:
        self.builder = builder
        self.topic = topic
        self.partition = partition
        self.envs: list[Envelope] = []
        self.moved = False
        """Set when the bridge degraded while the batch was being sent: its records went to
        the spool."""


class _RecordBatch:
    """A `BatchBuilder` for a `RecordProducer`: holds the records, never full."""

    __slots__ = ("closed", "records")

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.closed = False

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> object | None:
        if self.closed:
            return None
        self.records.append((key, value, headers))
        return self

    def close(self) -> None:
        self.closed = True


class _PerRecord:
    """`Producer` over a `RecordProducer`: ``send_batch`` sends the batch's records one by one
    and returns a future that completes when they all did (or fails with the first failure)."""

    def __init__(self, producer: RecordProducer) -> None:
        self._producer = producer

    def create_batch(self) -> BatchBuilder:
        return _RecordBatch()

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        assert isinstance(batch, _RecordBatch)
        send = self._producer.send
        futs = [
            await send(topic, value, key=key, headers=headers)
            for key, value, headers in batch.records
        ]
        return asyncio.gather(*futs)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def stop(self) -> None:
        await self._producer.stop()


class EgressBridge:
    """Moves bus messages matching the routes to Kafka; see the module docstring."""

    def __init__(
        self,
        *,
        bus: MessageBus,
        routes: Sequence[EgressRoute],
        producer_id: str,
        connect: Callable[[], Awaitable[Producer | RecordProducer]],
        spool: Spool,
        log: Logger,
        queue_capacity: int = 8_192,
        max_in_flight: int = 8_192,
        batch_size: int = 512,
        request_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
        span_id_for: Callable[[str], str | None] | None = None,
        run_id: str | None = None,
        on_state: Callable[[bool, str], None] | None = None,
        on_delivered: Callable[[Sequence[Envelope]], None] | None = None,
        name: str = "kafka-egress",
    ) -> None:
        if not routes:
            raise ValueError("an egress bridge needs at least one route")
        self._bus = bus
        self._routes = tuple(routes)
        self.producer_id = producer_id
        self._connect = connect
        self._spool = spool
        self._log = log
        self._capacity = queue_capacity
        self._max_in_flight = max_in_flight
        self._batch_size = batch_size
        self._timeout = request_timeout_s
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._span_id_for = span_id_for
        self.run_id = run_id
        self._on_state = on_state
        self.delivery_listeners: list[Callable[[Sequence[Envelope]], None]] = (
            [on_delivered] if on_delivered is not None else []
        )
        """Called with every batch of records the broker acknowledged (a cache, a test)."""
        self._name = name
        self.stats = EgressStats()
        self._route_cache: dict[str, tuple[EgressRoute, ...]] = {}
        self._seq = 0
        self._producer: Producer | None = None
        self._direct = False
        """True while healthy with an empty spool: messages go straight to the producer."""
        self._topics: dict[str, _Topic] = {}
        self._open: list[_Batch] = []
        """Batches being filled (also in their topic's ``open``), oldest first."""
        self._sending: list[_Batch] = []
        """Batches taken from ``_open`` whose ``send_batch`` has not returned yet."""
        self._send_lock = asyncio.Lock()
        self._inflight: deque[tuple[_Batch, asyncio.Future[Any]]] = deque()
        """Batches the producer took, not settled yet, in the order they were sent."""
        self._unacked = 0
        """Records in ``_open``, ``_sending`` and ``_inflight`` (bounded by max_in_flight)."""
        self._inflight_changed = asyncio.Event()
        self._spool_room = asyncio.Event()
        self._spool_waiters = 0
        self._recover_wake = asyncio.Event()
        self._subs: list[Subscription] = []
        self._pumps: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._in_pump = 0
        self._reason = "not started"
        self._send_fail_log = _BurstLog(log, "kafka unreachable: egress spools until it is back")
        self._drop_log = _BurstLog(log, "egress spool full: dropping messages of drop routes")

    # -- state -------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._direct

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def in_flight(self) -> int:
        """Records taken on the direct path and not acknowledged yet (open batches included)."""
        return self._unacked

    @property
    def spool_depth(self) -> int:
        return len(self._spool)

    @property
    def queued(self) -> int:
        """Messages waiting in the bridge's bus mailboxes (the bounded egress queue)."""
        return sum(sub.depth for sub in self._subs) + self._in_pump

    @property
    def spool(self) -> Spool:
        return self._spool

    def _set_state(self, healthy: bool, reason: str) -> None:
        self._reason = reason
        if self._on_state is not None:
            self._on_state(healthy, reason)

    # -- lifecycle ---------------------------------------------------------------------------

    async def _new_producer(self) -> Producer:
        producer = await asyncio.wait_for(self._connect(), self._timeout)
        if hasattr(producer, "send_batch"):
            return producer  # type: ignore[return-value]
        return _PerRecord(producer)

    async def start(self) -> None:
        """Subscribe, recover the spool file, connect once; an unreachable broker is not an
        error here (the bridge starts DEGRADED and keeps reconnecting)."""
        recovered = self._spool.open()
        self.stats.recovered_from_file = recovered
        if recovered:
            self._log.warning(
                "egress spool holds messages of an earlier run; they are sent first",
                messages=recovered,
                spool=str(self._spool.path),
            )
        policies: tuple[tuple[FullPolicy, OverflowPolicy], ...] = (
            ("block", OverflowPolicy.BLOCK),
            ("drop", OverflowPolicy.DROP_OLDEST),
        )
        for policy, mailbox in policies:
            patterns = [r.bus_pattern for r in self._routes if r.on_full == policy]
            if not patterns:
                continue
            sub = self._bus.subscribe(
                patterns, name=f"{self._name}.{policy}", capacity=self._capacity, policy=mailbox
            )
            self._subs.append(sub)
            self._pumps.append(
                asyncio.create_task(self._pump(sub, policy), name=f"{self._name}:{policy}")
            )
        try:
            self._producer = await self._new_producer()
        except Exception as exc:  # unreachable at start: keep trading, spool, retry
            self._log.warning(
                "kafka unreachable at start; egress starts DEGRADED and spools",
                error=f"{type(exc).__name__}: {exc}",
            )
            self._producer = None
        if self._producer is not None and not len(self._spool):
            self._direct = True
            self._set_state(True, "connected")
        else:
            self.stats.outages += 1
            self._set_state(
                False,
                "draining the spool" if self._producer is not None else "broker unreachable",
            )
            self._recover_wake.set()
        self._tasks = [
            asyncio.create_task(self._reap(), name=f"{self._name}:reaper"),
            asyncio.create_task(self._recover(), name=f"{self._name}:recovery"),
        ]

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (up to `timeout_s`), keep the rest in the spool file."""
        self._stopping = True
        for sub in self._subs:
            self._bus.unsubscribe(sub)
        self._spool_room.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._pumps:
            _done, pending = await asyncio.wait(
                self._pumps, timeout=max(0.0, deadline - loop.time())
            )
            for task in pending:
                task.cancel()
            for task in self._pumps:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._open and self._direct and loop.time() < deadline:
            # A pump cancelled mid-batch left open batches: send them (else they are spooled).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(), deadline - loop.time())
        # Let the reaper and the recovery task empty the in-flight window and the spool.
        while (self._inflight or len(self._spool)) and loop.time() < deadline:
            if not self._direct:
                self._recover_wake.set()
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        leftover = self._take_unacked()
        if leftover:
            self._force_spool(leftover)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._producer.stop(), timeout=max(1.0, deadline - loop.time())
                )
            self._producer = None
        pending_count = len(self._spool)
        if pending_count:
            if self._spool.path is not None:
                self._log.warning(
                    "egress stopped with undelivered messages in the spool file; "
                    "the next start sends them first",
                    messages=pending_count,
                    spool=str(self._spool.path),
                )
            else:
                self.stats.lost_at_stop += pending_count
                self._log.error(
                    "egress stopped with undelivered messages and no spool file: they are lost",
                    messages=pending_count,
                )
        self._spool.close()
        self._send_fail_log.end()
        self._drop_log.end()
        self._direct = False
        self._set_state(False, "stopped")

    # -- routing and encoding ----------------------------------------------------------------

    def _routes_for(self, bus_topic: str) -> tuple[EgressRoute, ...]:
        """Every route whose pattern matches (a topic may go to several Kafka topics)."""
        try:
            return self._route_cache[bus_topic]
        except KeyError:
            routes = tuple(r for r in self._routes if topic_matches(r.bus_pattern, bus_topic))
            if len(self._route_cache) < 100_000:
                self._route_cache[bus_topic] = routes
            return routes

    def _encode(self, bus_topic: str, message: Contract, route: EgressRoute) -> Envelope:
        self._seq += 1
        span = self._span_id_for(message.trace_id) if self._span_id_for is not None else None
        return encode(
            bus_topic,
            message,
            kafka_topic=route.topic,
            message_id=f"{self.producer_id}-{self._seq}",
            producer_id=self.producer_id,
            span_id=span,
            run_id=self.run_id,
        )

    async def _topic(self, producer: Producer, name: str) -> _Topic:
        """The topic's partitions from the producer's metadata (waits for it the first time, as
        ``send`` would); the key cache is dropped when they changed."""
        partitions = await producer.partitions_for(name)
        if not partitions:
            raise RuntimeError(f"topic {name!r} has no partitions")
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(partitions)
        else:
            topic.refresh(partitions)
        return topic

    # -- the pumps: bus -> producer or spool -------------------------------------------------

    async def _pump(self, sub: Subscription, policy: FullPolicy) -> None:
        get_batch = sub.get_batch
        routes_for = self._routes_for
        while True:
            try:
                batch = await get_batch(self._batch_size)
            except SubscriptionClosed:
                return
            self._in_pump += len(batch)
            try:
                await self._pump_batch(batch, policy, routes_for)
            finally:
                self._in_pump -= len(batch)

    async def _pump_batch(
        self,
        batch: Sequence[tuple[str, object]],
        policy: FullPolicy,
        routes_for: Callable[[str], tuple[EgressRoute, ...]],
    ) -> None:
        to_spool: list[Envelope] = []
        topics: dict[str, _Topic] = {}
        """Topics whose partitions were read in this wake-up."""
        take, add, stats = self._take, self._add, self.stats
        for bus_topic, message in batch:
            for route in routes_for(bus_topic):
                if route.on_full != policy:
                    continue  # that route's messages come through the other pump
                if not isinstance(message, Contract):
                    stats.not_contract += 1
                    continue
                env = self._encode(bus_topic, message, route)
                stats.encoded += 1
                if (
                    to_spool
                    or not self._direct
                    or not (take(env, topics) or await add(env, topics))
                ):
                    to_spool.append(env)
        if self._open and self._direct:
            await self._flush()
        if to_spool:
            await self._spool_many(to_spool, policy)

    def _take(self, env: Envelope, topics: dict[str, _Topic]) -> bool:
        """Append one record to the open batch of its partition when that needs no waiting
        (room in the window, partitions known, the batch not full); else False and `_add`."""
        if self._unacked >= self._max_in_flight:
            return False
        topic = topics.get(env.topic)
        if topic is None:
            return False
        key = env.key
        partition = topic.partition_of(key)
        batch = topic.open.get(partition)
        if batch is None:
            producer = self._producer
            if producer is None:
                return False
            batch = topic.open[partition] = _Batch(producer.create_batch(), env.topic, partition)
            self._open.append(batch)
        if (
            batch.builder.append(
                timestamp=None, key=key, value=env.value, headers=list(env.headers)
            )
            is None
        ):
            return False  # full (and closed by aiokafka): `_add` hands it over
        batch.envs.append(env)
        self._unacked += 1
        if key is None:
            topic.took_unkeyed()
        return True

    async def _add(self, env: Envelope, topics: dict[str, _Topic]) -> bool:
        """`_take`, after waiting for what it lacked; False if the record must go to the spool
        instead (the bridge is or turned DEGRADED)."""
        while self._direct:
            if self._unacked >= self._max_in_flight:
                if self._open:
                    await self._flush()  # the window may be full of records not sent yet
                else:
                    self._inflight_changed.clear()
                    await self._inflight_changed.wait()
                continue
            producer = self._producer
            if producer is None:
                return False
            topic = topics.get(env.topic)
            if topic is None:
                try:
                    topics[env.topic] = await self._topic(producer, env.topic)
                except Exception as exc:
                    self._enter_degraded(f"send failed: {type(exc).__name__}: {exc}")
                    return False
                continue
            if self._take(env, topics):
                return True
            batch = topic.open[topic.partition_of(env.key)]
            if not batch.envs:  # never with aiokafka: the first record always fits
                self._enter_degraded(f"record {env.message_id} does not fit an empty batch")
                return False
            del topic.open[batch.partition]
            self._open.remove(batch)
            await self._send_batches([batch])  # full: send it, a new batch takes the record
        return False

    async def _flush(self) -> None:
        """Send every open batch; a failure turns the bridge DEGRADED."""
        batches = self._open
        if not batches:
            return
        self._open = []
        for topic in self._topics.values():
            topic.open.clear()
        await self._send_batches(batches)

    async def _send_batches(self, batches: list[_Batch]) -> None:
        """Hand `batches` to the producer in order, one sender at a time (so the batches of a
        partition reach it in the order they were filled), and put them in flight."""
        sending = self._sending
        sending.extend(batches)
        async with self._send_lock:
            for batch in batches:
                if batch.moved:
                    continue  # the bridge degraded meanwhile: the records are in the spool
                producer = self._producer
                if producer is None:  # unreachable: the direct path has a producer
                    self._enter_degraded("no producer")
                    continue
                batch.builder.close()
                try:
                    fut = await producer.send_batch(
                        batch.builder, batch.topic, partition=batch.partition
                    )
                except Exception as exc:
                    self._enter_degraded(f"send failed: {type(exc).__name__}: {exc}")
                    continue
                if batch.moved:
                    # The bridge failed while this send waited: the records were spooled (they
                    # may arrive twice: dedup).
                    fut.add_done_callback(_ignore_result)
                    continue
                sending.remove(batch)
                self._inflight.append((batch, fut))
                if len(self._inflight) == 1:
                    self._inflight_changed.set()

    async def _spool_many(self, envs: list[Envelope], policy: FullPolicy) -> None:
        i = 0
        while i < len(envs):
            room = self._spool.room
            if room <= 0:
                if self._stopping:
                    self._force_spool(envs[i:])
                    return
                if policy == "drop":
                    lost = len(envs) - i
                    self.stats.dropped_full += lost
                    self._drop_log.hit(dropped=lost, spool=len(self._spool))
                    return
                self._spool_waiters += 1
                try:
                    self._spool_room.clear()
                    await self._spool_room.wait()
                finally:
                    self._spool_waiters -= 1
                continue
            chunk = envs[i : i + room]
            self._append(chunk)
            i += len(chunk)
        self._recover_wake.set()

    def _append(self, envs: list[Envelope], *, force: bool = False) -> None:
        """Spool `envs`; a file that cannot be written (disk full, I/O error) is given up for
        memory, loudly, rather than losing the records or killing the pump."""
        try:
            self._spool.append(envs, force=force)
        except OSError as exc:
            self.stats.spool_file_errors += 1
            self._log.error(
                "egress spool file cannot be written; spooling in memory only from now on "
                "(a kill now loses what is spooled)",
                spool=str(self._spool.path),
                error=f"{type(exc).__name__}: {exc}",
            )
            self._spool.detach_file()
            self._spool.append(envs, force=force)
        self.stats.spooled += len(envs)

    def _force_spool(self, envs: list[Envelope]) -> None:
        """At stop (or when in-flight records fall back): keep them even past the bound, so a
        clean stop never drops a trading message; the bound applies again at the next start."""
        self._append(envs, force=True)

    # -- failure and recovery ----------------------------------------------------------------

    def _take_unacked(self) -> list[Envelope]:
        """Forget every record of the direct path not acknowledged yet (open, being sent, in
        flight; their futures' outcomes are ignored) and return them in encoding order."""
        envs: list[Envelope] = []
        for batch, fut in self._inflight:
            envs += batch.envs
            fut.add_done_callback(_ignore_result)
        for batch in self._sending:
            batch.moved = True
            envs += batch.envs
        for batch in self._open:
            envs += batch.envs
        self._inflight.clear()
        self._sending.clear()
        self._open.clear()
        for topic in self._topics.values():
            topic.open.clear()
        self._unacked = 0
        envs.sort(key=_sequence_of)
        return envs

    def _enter_degraded(self, reason: str) -> None:
        if not self._direct:
            return
        self._direct = False
        self.stats.outages += 1
        self.stats.send_failures += 1
        moved = self._take_unacked()
        self._inflight_changed.set()
        if moved:
            self._force_spool(moved)
        self._send_fail_log.hit(reason=reason, requeued=len(moved))
        self._set_state(False, reason)
        self._recover_wake.set()

    async def _reap(self) -> None:
        """Settle in-flight batches oldest first; the first failure degrades the bridge."""
        inflight = self._inflight
        while True:
            if not inflight:
                self._inflight_changed.clear()
                await self._inflight_changed.wait()
                continue
            head = inflight[0]
            fut = head[1]
            if not fut.done():
                await asyncio.wait([fut], timeout=self._timeout)
                if not inflight or inflight[0] is not head:
                    continue  # moved to the spool meanwhile
                if not fut.done():
                    self._enter_degraded(f"no acknowledgement within {self._timeout:g} s")
                    continue
            done: list[Envelope] = []
            while inflight and inflight[0][1].done():
                batch, f = inflight[0]
                if f.cancelled() or f.exception() is not None:
                    error = "cancelled" if f.cancelled() else repr(f.exception())
                    if done:
                        self._delivered(done)
                    self._enter_degraded(f"send failed: {error}")
                    done = []
                    break
                inflight.popleft()
                self._unacked -= len(batch.envs)
                done += batch.envs
            if done:
                self._delivered(done)
                self._inflight_changed.set()

    def _delivered(self, envs: Sequence[Envelope]) -> None:
        self.stats.delivered += len(envs)
        for listener in self.delivery_listeners:
            try:
                listener(envs)
            except Exception as exc:  # a cache must never break delivery
                self._log.warning("egress delivery listener failed", exc_info=exc)

    async def _recover(self) -> None:
        """While DEGRADED: reconnect with backoff, probe with one record, drain in order."""
        initial, cap = self._backoff
        backoff = initial
        probing = True
        while True:
            await self._recover_wake.wait()
            if self._direct:
                self._recover_wake.clear()
                continue
            if self._producer is None:
                self.stats.reconnect_attempts += 1
                try:
                    self._producer = await self._new_producer()
                except Exception as exc:
                    self._send_fail_log.hit(reason=f"connect: {type(exc).__name__}: {exc}")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, cap)
                    continue
            if not len(self._spool):
                if self._spool_waiters:
                    await asyncio.sleep(0)
                    continue
                self._direct = True
                self._recover_wake.clear()
                self._send_fail_log.end()
                self._set_state(True, "connected")
                self._log.info(
                    "kafka reachable again; egress is direct", drained=self.stats.drained
                )
                backoff, probing = initial, True
                continue
            batch = self._spool.peek(1 if probing else self._max_in_flight)
            self.stats.reconnect_attempts += probing
            if await self._send_all(batch):
                try:
                    self._spool.ack(len(batch))
                except OSError as exc:  # the sidecar: memory already forgot them
                    self.stats.spool_file_errors += 1
                    self._log.error(
                        "egress spool file cannot be updated; spooling in memory only",
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    self._spool.detach_file()
                self.stats.drained += len(batch)
                self._delivered(batch)
                self._spool_room.set()
                self._drop_log.end()
                if probing:  # reachable again: re-read the cluster's layout before draining
                    await self._refresh_metadata()
                backoff, probing = initial, False
            else:
                self.stats.send_failures += 1
                probing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, cap)

    async def _refresh_metadata(self) -> None:
        """Have the producer re-read the cluster metadata (best effort; aiokafka's
        ``client.force_metadata_update``, absent on test doubles). After an outage the cluster
        may be back with another layout (a restarted broker, a re-created topic), and the
        producer would otherwise keep the one it cached before: nothing forces a refresh while
        produce requests succeed, and the partitions are chosen here from that cache."""
        client = getattr(self._producer, "client", None)
        force = getattr(client, "force_metadata_update", None)
        if force is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(force(), self._timeout)

    async def _send_all(self, batch: Sequence[Envelope]) -> bool:
        """Send spooled records in record batches per partition (order kept per partition) and
        wait for all of them; False (logged) on any failure or timeout."""
        producer = self._producer
        if producer is None:
            return False
        futs: list[asyncio.Future[Any]] = []
        try:
            topics: dict[str, _Topic] = {}
            builders: dict[tuple[str, int], BatchBuilder] = {}
            for env in batch:
                topic = topics.get(env.topic)
                if topic is None:
                    topic = topics[env.topic] = await self._topic(producer, env.topic)
                key = env.key
                partition = topic.partition_of(key)
                if key is None:
                    topic.took_unkeyed()
                slot = (env.topic, partition)
                builder = builders.get(slot)
                if builder is None:
                    builder = builders[slot] = producer.create_batch()
                headers = list(env.headers)
                added = builder.append(timestamp=None, key=key, value=env.value, headers=headers)
                if added is not None:
                    continue
                futs.append(await producer.send_batch(builder, env.topic, partition=partition))
                builder = builders[slot] = producer.create_batch()
                added = builder.append(timestamp=None, key=key, value=env.value, headers=headers)
                if added is None:
                    raise RuntimeError(f"record {env.message_id} does not fit an empty batch")
            for (name, partition), builder in builders.items():
                builder.close()
                futs.append(await producer.send_batch(builder, name, partition=partition))
        except Exception as exc:
            for fut in futs:
                fut.add_done_callback(_ignore_result)
            self._send_fail_log.hit(reason=f"send: {type(exc).__name__}: {exc}")
            return False
        _done, pending = await asyncio.wait(futs, timeout=self._timeout)
        for fut in futs:
            fut.add_done_callback(_ignore_result)
        if pending:
            self._send_fail_log.hit(reason=f"no acknowledgement within {self._timeout:g} s")
            return False
        failed = next((f for f in futs if f.cancelled() or f.exception() is not None), None)
        if failed is not None:
            error = "cancelled" if failed.cancelled() else repr(failed.exception())
            self._send_fail_log.hit(reason=f"send: {error}")
            return False
        return True


__all__ = [
    "BatchBuilder",
    "EgressBridge",
    "EgressRoute",
    "EgressStats",
    "FullPolicy",
    "Producer",
    "RecordProducer",
]
