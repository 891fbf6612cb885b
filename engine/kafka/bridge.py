"""The Kafka bridge of one process: egress, ingress and their clients, built from `KafkaConfig`.

Why it exists: the engine and a remote agent host both need "these bus topics out, those Kafka
topics in", with the same producer settings, security, spool and health reporting; this class
owns that wiring so each of them only says which routes.

Trade-offs:

- Two producers: the egress producer (ordered, spooled, possibly idempotent) and a small one for
  dead letters, so a dead letter never waits behind (or reorders) egress traffic.
- Idempotence "auto": tried first; a broker that does not implement InitProducerId (tansu's
  memory storage, old brokers) gets a non-idempotent producer and one warning. Order is still
  kept (one in-flight batch per partition is aiokafka's behaviour) and duplicates after a retry
  are removed downstream by message id.
- The ingress connects in the background: a broker that is down at start makes the bridge
  DEGRADED, not the engine fail; `wait_ingress_ready` lets a caller that needs the consumer
  positioned (remote agents) wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from config.models import KafkaConfig
from engine.bus import MessageBus
from engine.kafka.egress import EgressBridge, EgressRoute, Producer
from engine.kafka.envelope import H_PRODUCER_ID
from engine.kafka.ingress import Deliver, IngressBridge, IngressRoute
from engine.kafka.lvc import LastValueCache
from engine.kafka.security import client_kwargs
from engine.kafka.spool import Spool
from engine.lifecycle import AsyncService
from engine.telemetry.logging import Logger

StateListener = Callable[[bool, str], None]
"""Called with (healthy, reason) whenever the bridge's health changes."""


class KafkaStartupError(Exception):
    """The bridge cannot start as configured (e.g. idempotence required but unsupported)."""


def safe_name(text: str, allowed: str = "_.:-") -> str:
    """`text` with every character outside letters, digits and `allowed` replaced by "_" (for
    header values and file names made from config values)."""
    return "".join(ch if ch.isalnum() or ch in allowed else "_" for ch in text)


def new_producer_id(client_id: str) -> str:
    """A producer id unique per process start: `<client_id>.<8 random hex>`."""
    return f"{safe_name(client_id)[:64]}.{secrets.token_hex(4)}"


def spool_path(run_root: Path, client_id: str) -> Path:
    """Where a process with this client id keeps its egress spool file: stable across runs, so
    a restart finds what an earlier process could not send."""
    return run_root / "kafka-spool" / f"{safe_name(client_id, '_.-')}.spool"


def producer_kwargs(config: KafkaConfig) -> dict[str, Any]:
    p = config.producer
    return {
        **client_kwargs(config),
        "acks": "all" if p.acks == "all" else int(p.acks),
        "compression_type": None if p.compression == "none" else p.compression,
        "linger_ms": p.linger_ms,
        "max_batch_size": p.max_batch_bytes,
        "request_timeout_ms": p.request_timeout_ms,
    }


class ProducerFactory:
    """Starts egress producers, deciding idempotence once ("auto": where supported)."""

    def __init__(self, config: KafkaConfig, log: Logger) -> None:
        self._config = config
        self._log = log
        self.idempotent: bool | None = None
        """None until the first successful start; then whether the producer is idempotent."""

    async def __call__(self) -> Producer:
        mode = self._config.producer.idempotence
        kwargs = producer_kwargs(self._config)
        if mode != "off" and self.idempotent is not False and kwargs["acks"] == "all":
            producer = AIOKafkaProducer(**kwargs, enable_idempotence=True)
            # aiokafka logs a refused InitProducerId as an error; here it is an expected probe
            # whose outcome the warning below reports once.
            sender_log = logging.getLogger("aiokafka.producer.sender")
            level = sender_log.level
            sender_log.setLevel(logging.CRITICAL)
            try:
                await producer.start()
            except KafkaError as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                if not _idempotence_unsupported(exc):
                    raise
                if mode == "on":
                    raise KafkaStartupError(
                        "kafka.producer.idempotence = 'on' but the broker does not support "
                        f"idempotent producers ({type(exc).__name__}: {exc})"
                    ) from exc
                self.idempotent = False
                self._log.warning(
                    "the broker does not support idempotent producers; producing without "
                    "idempotence (order is kept, retries may duplicate: consumers dedup by "
                    "message id)",
                    error=f"{type(exc).__name__}: {exc}",
                )
            else:
                self.idempotent = True
                return cast(Producer, producer)
            finally:
                sender_log.setLevel(level)
        elif mode == "on":
            raise KafkaStartupError("kafka.producer.idempotence = 'on' needs acks = 'all'")
        producer = AIOKafkaProducer(**kwargs, enable_idempotence=False)
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        if self.idempotent is None:
            self.idempotent = False
        return cast(Producer, producer)


def _idempotence_unsupported(exc: KafkaError) -> bool:
    # Connection problems say "unreachable", not "unsupported": those must be retried.
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    return not isinstance(exc, KafkaConnectionError | KafkaTimeoutError)


class KafkaBridge(AsyncService):
    """Egress and ingress of one process; see the module docstring."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        bus: MessageBus,
        log: Logger,
        egress_routes: Sequence[EgressRoute] = (),
        ingress_routes: Sequence[IngressRoute] = (),
        spool_file: Path | None = None,
        producer_id: str | None = None,
        group_id: str | None = None,
        from_end: bool = False,
        run_id: str | None = None,
        span_id_for: Callable[[str], str | None] | None = None,
        on_state: StateListener | None = None,
        last_value_cache: LastValueCache | None = None,
        deliver: Deliver | None = None,
    ) -> None:
        """`group_id` None: the ingress assigns every partition itself (no group, no commits);
        `from_end`: it starts at the end of each partition (a remote agent joins new runs)."""
        self.config = config
        self._bus = bus
        self._log = log
        self._egress_routes = tuple(egress_routes)
        self._ingress_routes = tuple(ingress_routes)
        self.producer_id = producer_id or new_producer_id(config.client_id)
        self._group_id = group_id
        self._from_end = from_end
        self._span_id_for = span_id_for
        self._on_state = on_state
        self.lvc = last_value_cache
        self._deliver = deliver
        self.producers = ProducerFactory(config, log)
        self.egress: EgressBridge | None = None
        if self._egress_routes:
            self.egress = EgressBridge(
                bus=bus,
                routes=self._egress_routes,
                producer_id=self.producer_id,
                connect=self.producers,
                spool=Spool(
                    spool_file if config.spool.file else None,
                    max_messages=config.spool.max_messages,
                ),
                log=log.bind(subsystem="kafka-egress"),
                queue_capacity=config.producer.queue_capacity,
                max_in_flight=config.producer.max_in_flight,
                request_timeout_s=config.producer.request_timeout_ms / 1000,
                backoff_initial_s=config.spool.reconnect_backoff_initial_s,
                backoff_max_s=config.spool.reconnect_backoff_max_s,
                span_id_for=span_id_for,
                run_id=run_id,
                on_state=self._egress_state,
                on_delivered=last_value_cache.record if last_value_cache is not None else None,
            )
        self.ingress: IngressBridge | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq_producer: AIOKafkaProducer | None = None
        self._ingress_task: asyncio.Task[None] | None = None
        self._ingress_ready = asyncio.Event()
        self._egress_ok = self.egress is None
        self._egress_reason = ""
        self._ingress_ok = not self._ingress_routes
        self._ingress_reason = "connecting" if self._ingress_routes else ""
        self._last_state: tuple[bool, str] | None = None

    # -- run id (remote agents change it per run) --------------------------------------------

    @property
    def run_id(self) -> str | None:
        return self.egress.run_id if self.egress is not None else None

    @run_id.setter
    def run_id(self, value: str | None) -> None:
        if self.egress is not None:
            self.egress.run_id = value

    # -- health ------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._egress_ok and self._ingress_ok

    @property
    def reason(self) -> str:
        parts = []
        if self.egress is not None:
            parts.append(f"egress: {self._egress_reason}")
        if self._ingress_routes:
            parts.append(f"ingress: {self._ingress_reason}")
        return "; ".join(parts)

    def _egress_state(self, healthy: bool, reason: str) -> None:
        self._egress_ok, self._egress_reason = healthy, reason
        self._notify()

    def _ingress_state(self, healthy: bool, reason: str) -> None:
        self._ingress_ok, self._ingress_reason = healthy, reason
        self._notify()

    def _notify(self) -> None:
        state = (self.healthy, self.reason)
        if state != self._last_state:
            self._last_state = state
            if self._on_state is not None:
                self._on_state(*state)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.lvc is not None:
            await self.lvc.start()
        if self.egress is not None:
            await self.egress.start()
        if self._ingress_routes:
            self._ingress_task = asyncio.create_task(
                self._connect_ingress(), name="kafka-ingress-connect"
            )
        self._notify()

    async def wait_ingress_ready(self, timeout_s: float) -> bool:
        """True once the ingress consumer is assigned and positioned (False on timeout)."""
        if not self._ingress_routes:
            return True
        try:
            await asyncio.wait_for(self._ingress_ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _connect_ingress(self) -> None:
        cfg = self.config
        backoff = cfg.spool.reconnect_backoff_initial_s
        topics = [r.topic for r in self._ingress_routes]
        while True:
            consumer: AIOKafkaConsumer | None = None
            try:
                if self._dlq_producer is None:
                    dlq = AIOKafkaProducer(**producer_kwargs(cfg))
                    try:
                        await dlq.start()
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await dlq.stop()
                        raise
                    self._dlq_producer = dlq
                consumer = self._make_consumer(topics)
                await consumer.start()
                if self._group_id is None:
                    partitions: list[TopicPartition] = []
                    for topic in topics:
                        found = consumer.partitions_for_topic(topic)
                        if not found:
                            await consumer._client.force_metadata_update()
                            found = consumer.partitions_for_topic(topic)
                        if not found:
                            raise KafkaError(f"topic {topic!r} does not exist")
                        partitions += [TopicPartition(topic, p) for p in sorted(found)]
                    consumer.assign(partitions)
                    if self._from_end:
                        await consumer.seek_to_end(*partitions)
                else:
                    consumer.subscribe(topics)
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + max(30.0, cfg.consumer.session_timeout_ms / 1000 * 3)
                    while not consumer.assignment():
                        if loop.time() > deadline:
                            raise KafkaError("consumer group assignment timed out")
                        await asyncio.sleep(0.02)
                for tp in consumer.assignment():
                    await consumer.position(tp)  # resolves auto_offset_reset now, not later
            except asyncio.CancelledError:
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        await consumer.stop()
                raise
            except Exception as exc:
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        await consumer.stop()
                self._ingress_state(False, f"connecting: {type(exc).__name__}: {exc}")
                self._log.warning(
                    "kafka ingress cannot start yet; retrying",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, cfg.spool.reconnect_backoff_max_s)
                continue
            self._consumer = consumer
            break
        self.ingress = IngressBridge(
            bus=self._bus,
            routes=self._ingress_routes,
            consumer=consumer,
            dead_letter_topic=cfg.dead_letter_topic,
            dead_letter=self._send_dead_letter,
            own_producer_id=self.producer_id,
            log=self._log.bind(subsystem="kafka-ingress"),
            max_message_bytes=cfg.consumer.max_message_bytes,
            dedup_window=cfg.consumer.dedup_window,
            max_records=cfg.consumer.max_poll_records,
            commit=self._group_id is not None,
            deliver=self._deliver,
            backoff_initial_s=cfg.spool.reconnect_backoff_initial_s,
            backoff_max_s=cfg.spool.reconnect_backoff_max_s,
            previous_producer_ids=self._recovered_producer_ids(),
            commit_timeout_s=cfg.producer.request_timeout_ms / 1000,
            on_fault=lambda exc: self._ingress_state(False, f"failed: {type(exc).__name__}: {exc}"),
        )
        await self.ingress.start()
        self._ingress_state(True, "consuming " + ", ".join(topics))
        self._ingress_ready.set()

    def _recovered_producer_ids(self) -> frozenset[str]:
        """Producer ids of the spooled records a previous process left (sent by this one)."""
        if self.egress is None:
            return frozenset()
        spool = self.egress.spool
        ids = set()
        for env in spool.peek(len(spool)):
            for name, value in env.headers:
                if name == H_PRODUCER_ID:
                    ids.add(value.decode("utf-8", "replace"))
        ids.discard(self.producer_id)
        return frozenset(ids)

    def _make_consumer(self, topics: Sequence[str]) -> AIOKafkaConsumer:
        c = self.config.consumer
        kwargs: dict[str, Any] = {
            **client_kwargs(self.config),
            "enable_auto_commit": False,
            "auto_offset_reset": c.auto_offset_reset,
            "fetch_max_wait_ms": c.fetch_max_wait_ms,
            "max_poll_records": c.max_poll_records,
            "check_crcs": True,
        }
        if self._group_id is not None:
            kwargs |= {
                "group_id": self._group_id,
                "session_timeout_ms": c.session_timeout_ms,
                "heartbeat_interval_ms": c.heartbeat_interval_ms,
            }
        return AIOKafkaConsumer(**kwargs)

    async def _send_dead_letter(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        producer = self._dlq_producer
        if producer is None:
            raise KafkaError("dead-letter producer not connected")
        fut = await producer.send(topic, value, key=key, headers=headers)
        await asyncio.wait_for(fut, self.config.producer.request_timeout_ms / 1000)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the egress has delivered everything queued so far (False on timeout)."""
        if self.egress is None:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.egress.in_flight or self.egress.spool_depth or self.egress.queued:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def stop(self) -> None:
        if self._ingress_task is not None:
            self._ingress_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ingress_task
            self._ingress_task = None
        if self.ingress is not None:
            await self.ingress.stop()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), 10)
            self._consumer = None
        if self.egress is not None:
            await self.egress.stop()
        if self._dlq_producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._dlq_producer.stop(), 10)
            self._dlq_producer = None
        if self.lvc is not None:
            await self.lvc.stop()


__all__ = [
    "KafkaBridge",
    "KafkaStartupError",
    "ProducerFactory",
    "new_producer_id",
    "producer_kwargs",
    "safe_name",
    "spool_path",
]
