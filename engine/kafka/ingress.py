"""Ingress: Kafka records in to the bus, validated, deduplicated, with backpressure.

Why it exists: data from outside the process (external signal providers, remote agents) enters
the engine here, so this is where it is validated (the bus itself trusts its messages).

Per record, in partition order:

1. `engine.kafka.envelope.decode` checks size, headers, type, schema version, content type and
   the contract itself. A failure goes to the dead-letter topic with the original key, value and
   headers plus ``error-reason``/``error-detail``/``source-*`` headers, is counted per reason
   and logged once per burst (a flood of bad records costs one log line, not one per record).
2. Records of this process' own producer are skipped (the bridge never re-ingests what it
   sent); records of another run on a run-scoped route (remote agents) are dead-lettered as
   ``stale_run``; a message id seen within the dedup window is dropped as a duplicate
   (at-least-once delivery upstream, exactly once on the bus).
3. The message is published on the bus. A full block mailbox pauses fetching from every
   assigned partition until it has room, so the ingress never buffers without bound (aiokafka's
   prefetch is bounded by its fetch sizes).
4. Offsets are committed after the whole batch is on the bus or in the dead-letter topic,
   never before: a crash re-delivers (and the dedup window drops) rather than loses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from contracts import Contract
from engine.bus import MailboxFull, MessageBus
from engine.kafka.envelope import (
    H_ERROR_DETAIL,
    H_ERROR_REASON,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
    Accepted,
    Rejected,
    RejectReason,
    decode,
)
from engine.telemetry.logging import Logger

Deliver = Callable[[str, Contract], Awaitable[None]]
DeadLetterSend = Callable[
    [str, bytes | None, bytes | None, list[tuple[str, bytes]]], Awaitable[None]
]
"""(dead-letter topic, key, value, headers) -> completes once the broker acknowledged it."""


class Record(Protocol):
    """The part of an aiokafka ConsumerRecord the ingress reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class IngressRoute:
    """Records of Kafka `topic` go to the bus; see `config.models.KafkaIngressRoute`."""

    topic: str
    bus_prefix: str = ""
    types: frozenset[str] | None = None
    run_id: Callable[[], str | None] | None = None
    """Run-scoped route (remote agents): a record must carry the current run id, else it is
    dead-lettered as ``stale_run``; while it returns None (no run yet) every record is stale."""
    check: Callable[[str, Contract], str | None] | None = None
    """Extra acceptance rule on (bus topic, message): a returned text rejects the record as
    ``type_not_allowed`` with that text (e.g. a signal of an agent that is not remote)."""


class DedupWindow:
    """The last `capacity` message ids, to drop redeliveries (insertion-ordered dict: O(1))."""

    __slots__ = ("_capacity", "_ids")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("dedup window capacity must be >= 1")
        self._capacity = capacity
        self._ids: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._ids

    def add(self, message_id: str) -> None:
        ids = self._ids
        ids[message_id] = None
        if len(ids) > self._capacity:
            del ids[next(iter(ids))]


@dataclass(slots=True)
class IngressStats:
    """Counters of one ingress (exported as Prometheus metrics)."""

    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    own_skipped: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    dead_letter_failures: int = 0
    pauses: int = 0
    commits: int = 0
    commit_failures: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class IngressBridge:
    """Consumes the routed topics into the bus; see the module docstring."""

    def __init__(
        self,
        *,
        bus: MessageBus,
        routes: Sequence[IngressRoute],
        consumer: Any,
        dead_letter_topic: str,
        dead_letter: DeadLetterSend,
        own_producer_id: str | None,
        log: Logger,
        max_message_bytes: int = 1_048_576,
        dedup_window: int = 100_000,
        max_records: int = 500,
        commit: bool = True,
        deliver: Deliver | None = None,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
        previous_producer_ids: frozenset[str] = frozenset(),
        commit_timeout_s: float = 10.0,
        on_fault: Callable[[BaseException], None] | None = None,
        name: str = "kafka-ingress",
    ) -> None:
        """`consumer`: a started-by-us `aiokafka.AIOKafkaConsumer` already subscribed or
        assigned; `commit=False` for consumers without a group (manual assignment)."""
        self._bus = bus
        self._routes: Mapping[str, IngressRoute] = {r.topic: r for r in routes}
        self._consumer = consumer
        self._dlq_topic = dead_letter_topic
        self._dead_letter = dead_letter
        self._own = (
            frozenset({own_producer_id}) if own_producer_id is not None else frozenset()
        ) | previous_producer_ids
        """This process' producer id, and those of earlier processes whose spooled records it
        re-sent at start (their records are this engine's own output too)."""
        self._log = log
        self._max_bytes = max_message_bytes
        self.dedup = DedupWindow(dedup_window)
        self._max_records = max_records
        self._commit = commit
        self._deliver = deliver or self._publish
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._commit_timeout_s = commit_timeout_s
        self._on_fault = on_fault
        self._name = name
        self.stats = IngressStats()
        self._task: asyncio.Task[None] | None = None
        self._bursts: dict[str, int] = {}
        self._handled: dict[Any, int] = {}
        """Next offset per partition of records already on the bus (or dead-lettered) and not
        yet committed."""
        self.error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._guarded_run(), name=self._name)

    async def _guarded_run(self) -> None:
        """`_run`, with an unexpected failure recorded and reported, never silent."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc
            self._log.error("kafka ingress failed; it stopped consuming", exc_info=exc)
            if self._on_fault is not None:
                self._on_fault(exc)
            raise

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._commit and self._handled:
            # What is already on the bus is committed, so a restart does not publish it again
            # (the dedup window does not survive a restart).
            await self._commit_offsets(dict(self._handled))
        self._end_bursts()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        consumer = self._consumer
        initial, cap = self._backoff
        backoff = initial
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=self._max_records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker trouble: aiokafka reconnects; we back off
                self._log.warning(
                    "kafka ingress fetch failed; retrying", error=f"{type(exc).__name__}: {exc}"
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, cap)
                continue
            backoff = initial
            if not batches:
                self._end_bursts()
                continue
            offsets = self._handled
            rejected_any = False
            for tp, records in batches.items():
                route = self._routes.get(tp.topic)
                for record in records:
                    rejected_any |= not await self.handle(record, route)
                    offsets[tp] = record.offset + 1
            if not rejected_any:
                self._end_bursts()
            if self._commit and offsets:
                await self._commit_offsets(dict(offsets))

    async def _commit_offsets(self, offsets: dict[Any, int]) -> None:
        assigned = self._consumer.assignment()
        for tp in [tp for tp in self._handled if tp not in assigned]:
            # Revoked in a rebalance: the new owner resumes from the last commit (at-least-once).
            del self._handled[tp]
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            # Bounded: with the broker gone aiokafka would retry until the consumer is closed.
            await asyncio.wait_for(self._consumer.commit(offsets), self._commit_timeout_s)
            self.stats.commits += 1
            for tp, offset in offsets.items():
                if self._handled.get(tp) == offset:
                    del self._handled[tp]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not fatal: the next commit covers these offsets too; a crash before it re-delivers
            # them and the dedup window drops what was already published.
            self.stats.commit_failures += 1
            self._log.warning("kafka offset commit failed", error=f"{type(exc).__name__}: {exc}")

    async def handle(self, record: Record, route: IngressRoute | None) -> bool:
        """Validate and deliver one record; False when it was dead-lettered."""
        self.stats.records += 1
        if route is None:  # pragma: no cover - the consumer only reads routed topics
            result: Accepted | Rejected = Rejected(
                RejectReason.TOPIC_MISMATCH, f"no ingress route for topic {record.topic}", None
            )
        else:
            result = decode(
                record.value,
                record.headers,
                allowed_types=route.types,
                max_bytes=self._max_bytes,
                bus_prefix=route.bus_prefix,
            )
        if isinstance(result, Rejected):
            await self._reject(record, result)
            return False
        if result.producer_id in self._own:
            self.stats.own_skipped += 1
            return True
        if route is not None and route.check is not None:
            refusal = route.check(result.bus_topic, result.message)
            if refusal is not None:
                await self._reject(
                    record, Rejected(RejectReason.TYPE_NOT_ALLOWED, refusal, result.message_id)
                )
                return False
        if route is not None and route.run_id is not None:
            current = route.run_id()
            if result.run_id is None or result.run_id != current:
                await self._reject(
                    record,
                    Rejected(
                        RejectReason.STALE_RUN,
                        f"record of run {result.run_id!r}, the current run is {current!r}",
                        result.message_id,
                    ),
                )
                return False
        if result.message_id in self.dedup:
            self.stats.duplicates += 1
            return True
        await self._deliver(result.bus_topic, result.message)
        self.dedup.add(result.message_id)
        self.stats.accepted += 1
        return True

    async def _publish(self, topic: str, message: Contract) -> None:
        try:
            self._bus.publish_nowait(topic, message)
            return
        except MailboxFull:
            pass
        # Backpressure: stop fetching until the bus has room, instead of buffering.
        consumer = self._consumer
        partitions = list(consumer.assignment())
        consumer.pause(*partitions)
        self.stats.pauses += 1
        try:
            await self._bus.publish(topic, message)
        finally:
            # A rebalance during the wait may have revoked some: resume what is still ours.
            assigned = consumer.assignment()
            with contextlib.suppress(Exception):
                consumer.resume(*[tp for tp in partitions if tp in assigned])

    # -- dead letters ------------------------------------------------------------------------

    async def _reject(self, record: Record, rejected: Rejected) -> None:
        reason = rejected.reason.value
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        count = self._bursts.get(reason, 0)
        if count == 0:
            self._log.warning(
                "kafka record rejected; dead-lettered",
                reason=reason,
                detail=rejected.detail,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                message_id=rejected.message_id,
                dead_letter_topic=self._dlq_topic,
            )
        self._bursts[reason] = count + 1
        headers = [(k, v) for k, v in (record.headers or ()) if isinstance(v, bytes)]
        headers += [
            (H_ERROR_REASON, reason.encode()),
            (H_ERROR_DETAIL, rejected.detail.encode("utf-8", "replace")[:1000]),
            (H_SOURCE_TOPIC, record.topic.encode()),
            (H_SOURCE_PARTITION, str(record.partition).encode()),
            (H_SOURCE_OFFSET, str(record.offset).encode()),
        ]
        initial, cap = self._backoff
        backoff = initial
        while True:
            try:
                await self._dead_letter(self._dlq_topic, record.key, record.value, headers)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Never drop a rejected record silently: hold the ingress until the dead-letter
                # topic takes it (offsets are not committed meanwhile).
                self.stats.dead_letter_failures += 1
                self._log.error(
                    "dead-letter produce failed; retrying (ingress holds)",
                    error=f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, cap)
        self.stats.dead_lettered += 1

    def _end_bursts(self) -> None:
        for reason, count in self._bursts.items():
            if count > 1:
                self._log.warning(
                    "kafka records rejected (burst ended)", reason=reason, records=count
                )
        self._bursts.clear()


__all__ = ["DedupWindow", "IngressBridge", "IngressRoute", "IngressStats", "Record"]
