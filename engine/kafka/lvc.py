"""Last-value cache: the latest egress message per (Kafka topic, key) mirrored into Redis.

Why it exists: a dashboard or a restarting consumer wants "the current signal of AAPL" without
reading a topic from the beginning (the original design's "Redis caching" of the bus).

Trade-offs: the cache is written after the broker acknowledged a record (what it shows was
really published), coalesced per key and flushed in one pipelined round trip every
`flush_interval_s`, off the hot path: a burst of 10,000 updates of 20 keys costs 20 SETs. Values
expire after ``ttl_s`` so a stopped engine does not leave stale "current" values forever. An
unreachable Redis never affects trading or the egress: the flush fails, is counted and logged
once per burst, and the next flush writes the then-latest values.

Keys: ``<key_prefix>:<topic>:<record key>`` (``_`` when the record has no key); the value is
the record's JSON exactly as produced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from redis.asyncio import Redis

from config.models import LastValueCacheConfig, RedisConfig
from engine.features.redis_store import RedisFeatureStore
from engine.kafka.envelope import Envelope
from engine.telemetry.logging import Logger


class LastValueCache:
    """Coalesces delivered records per (topic, key) and writes them to Redis with a TTL."""

    def __init__(
        self,
        config: LastValueCacheConfig,
        redis: RedisConfig,
        *,
        log: Logger,
        flush_interval_s: float = 0.2,
    ) -> None:
        self._config = config
        self._redis_config = redis
        self._log = log
        self._interval = flush_interval_s
        self._pending: dict[bytes, bytes] = {}
        self._client: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self.writes = 0
        self.flush_failures = 0
        self._failing = False

    def key_for(self, topic: str, key: bytes | None) -> bytes:
        return f"{self._config.key_prefix}:{topic}:".encode() + (key if key else b"_")

    def record(self, envelopes: Sequence[Envelope]) -> None:
        """Remember the latest value per key (called by the egress on delivery; no I/O)."""
        pending = self._pending
        for env in envelopes:
            pending[self.key_for(env.topic, env.key)] = env.value

    async def start(self) -> None:
        # The feature store's pool builder: same URL rules, TLS and credentials handling.
        self._client = Redis(connection_pool=RedisFeatureStore._make_pool(self._redis_config))
        self._task = asyncio.create_task(self._run(), name="kafka-lvc")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        if not self._pending or self._client is None:
            return
        batch, self._pending = self._pending, {}
        ttl_ms = int(self._config.ttl_s * 1000)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in batch.items():
                    pipe.set(key, value, px=ttl_ms)
                await pipe.execute()
        except Exception as exc:
            self.flush_failures += 1
            # Newer values that arrived meanwhile win; otherwise retry these next time.
            for key, value in batch.items():
                self._pending.setdefault(key, value)
            if not self._failing:
                self._log.warning(
                    "last-value cache: Redis write failed; retrying",
                    error=f"{type(exc).__name__}: {exc}",
                )
            self._failing = True
            return
        if self._failing:
            self._log.info("last-value cache: Redis writes work again")
        self._failing = False
        self.writes += len(batch)


__all__ = ["LastValueCache"]
