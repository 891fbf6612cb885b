"""The Redis backend of the feature store: one connection pool, a near cache kept correct by
server-assisted invalidation, write-behind with a bounded buffer, and degraded operation.

Why this module exists: in production several engine processes (and the CLI) share features,
and a replay on Redis must decide exactly as one on the embedded backend. This client keeps the
`FeatureStore` contract (see `engine.features.store`) over the wire as cheaply as the wire
allows, and keeps trading when Redis goes away instead of raising into a stage.

How it works, and the trade-offs made:

- **Reads** of K entities are one round trip: one ``HMGET key f1 .. fn`` per entity (``HGETALL``
  for the whole row of a set of 32 fields or more, see `_ReadWire`), packed into one write on
  one pooled connection (a pipeline without MULTI), replies read back in order and decoded a
  row at a time (`RowDecoder`). The pool is redis-py's, but commands are sent on its
  connections directly rather than through `redis.asyncio.Redis`/`Pipeline`, whose
  per-command bookkeeping is measurable next to a round trip on a local server; for the same
  reason reads pack their own commands (once per set of names) and a connection is kept
  between round trips rather than checked out of the pool each time (`_acquire`). Every
  round trip is bounded by ``2 * connect_timeout_s`` (a connect, then a reply); a hung server
  is "unreachable".
- **Near cache** (optional): an in-process dict ``key -> {field: value}``, bounded, oldest
  fill evicted first, holding values *decoded*: a hit copies a row kept for the names it was
  last asked for (no decoding, no per-field work); values written through by this process
  are decoded once, by the next read that wants them; a value that does not decode stays
  bytes and is reported by every read served it. The cache is kept correct by Redis'
  server-assisted client-side caching in
  BCAST mode on the prefix ``<namespace>:fs:``: one dedicated connection (not from the pool)
  runs ``CLIENT TRACKING on REDIRECT <its own id> BCAST PREFIX ..`` and subscribes to
  ``__redis__:invalidate`` (RESP2), so every write by anyone to a key under the prefix drops
  that key here. redis-py's own client-side cache does not support asyncio.
  - A read does not fill the cache for a key that was invalidated, or written by this
    process (put or stored), while the read was in flight (a per-key generation, kept only
    while reads are in flight), nor for a key with a write of ours still queued (the reply
    may predate it); a flush-all invalidation or a reconnect bumps a global epoch likewise.
    So an entry is never older than the last invalidation processed, or the last write made,
    for its key.
  - While the invalidation connection is down, entries older than
    ``near_cache.fallback_ttl_s`` are not served, and when it is back the whole cache is
    dropped (invalidations may have been missed). If the server refuses tracking (ACLs,
    a proxy), the cache runs on that TTL for good; a warning says so once.
  - BCAST invalidates on *every* write under the prefix, including our own: a process that
    writes what it reads re-fetches it once after each write. That is the price of not
    tracking per-key reads (which costs the server memory per key per client).
  - Entries also carry the key's Redis expiry (a ``PTTL`` rides along with each fill), so
    a cached value is not served after its TTL even before Redis reclaims the key.
- **Writes** are write-behind: `put` encodes, makes the values visible to this process at
  once (an overlay of unflushed writes that every read applies, and the near cache
  write-through), and queues them; one writer task sends batches (``HSET`` + ``PEXPIRE``)
  in one round trip each. The queue is bounded: on overflow the oldest queued write is
  dropped, counted in `stats.dropped_writes` and logged (at most once a second, with counts).
  Delivery is at-least-once: a batch cut by a lost connection is resent whole (HSET and
  PEXPIRE are idempotent); a command Redis *refuses* (OOM, WRONGTYPE) is logged, counted in
  `stats.errors` and not retried, because retrying a refusal would block every later write.
- **Unreachable Redis**: at start, ``on_unavailable = "fail"`` raises
  `FeatureStoreUnavailableError` naming the URL; ``"degraded"`` starts DEGRADED. Mid-run, the
  first failed round trip sets DEGRADED; reads then do not touch the network (they would wait
  a timeout each): they serve near-cache entries and this process' unflushed writes as
  ``stale=True`` values, everything else is missing, and `stats.errors` counts each such read.
  The writer keeps the buffer and retries with exponential back-off (probing with PING when
  it has nothing to write); when Redis answers again it drains everything buffered during the
  outage, in order, and only then sets RUNNING.
- **Admin** (`register`, `list_sets`, `promote`, `active_version`): declarations live at
  ``<ns>:fs:meta:<name>:v<version>`` (JSON), the active versions in the hash ``<ns>:fs:active``.
  The engine never runs FLUSHDB, FLUSHALL or KEYS; listing uses SCAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.connection import AbstractConnection, ConnectionPool, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.models import NearCacheConfig, RedisConfig
from engine.features.codec import CorruptValueError, decode, stored_ts_us, us_to_ts
from engine.features.schema import FeatureSet, FeatureValue
from engine.features.store import (
    DecodedRow,
    FeatureStore,
    PendingWrite,
    ReadPlan,
    Row,
    SetInfo,
    StateListener,
    UnknownFeatureSetError,
    read_plan,
    set_prefix,
)
from engine.telemetry.logging import Logger

INVALIDATION_CHANNEL: Final = "__redis__:invalidate"
CLIENT_NAME: Final = "tradeengine-features"
TRACKING_CLIENT_NAME: Final = "tradeengine-features-invalidation"

_BATCH_MAX_WRITES: Final = 512
_BATCH_MAX_BYTES: Final = 4 << 20
_STOP_FLUSH_S: Final = 2.0
_ADMIN_TIMEOUT_S: Final = 30.0
_LIST_SAMPLE_KEYS: Final = 1000
_HVALS_CHUNK: Final = 32
_LOG_INTERVAL_S: Final = 1.0
_PING_INTERVAL_S: Final = 1.0

# What "Redis is unreachable" looks like: redis-py's connection errors (including auth and
# "loading"), its timeouts, a garbled reply stream (the connection is dropped), and OS-level
# socket errors (builtin TimeoutError is an OSError, so the round-trip bound raised by
# `asyncio.timeout` is one too). A `ResponseError` is a refusal, never "unreachable".
_UNREACHABLE: Final = (RedisConnectionError, RedisTimeoutError, InvalidResponse, OSError)

Command = tuple[str | bytes | int, ...]

_HGETALL_MIN_FIELDS: Final = 32
"""Whole-row reads of sets at least this wide use HGETALL rather than HMGET (`_ReadWire`)."""

# "Unread data or EOF on this connection?": `can_read` since redis-py 8 (which deprecates,
# with a warning per call, the older `can_read_destructive`).
_can_read: Callable[[AbstractConnection], Awaitable[bool]] = (
    getattr(AbstractConnection, "can_read", None) or AbstractConnection.can_read_destructive
)


class FeatureStoreUnavailableError(RuntimeError):
    """Redis could not be reached (at start with ``on_unavailable = "fail"``, or by an admin
    command). The message names the URL (never a password) and the cause, on one line."""


@dataclass(slots=True)
class _Entry:
    """One near-cache entry: the fields of one key this process has seen."""

    values: dict[str, FeatureValue | bytes]
    """Decoded values; bytes for values written through by this process (decoded, once, by the
    next read) and for values that do not decode (reported by every read, as uncached)."""
    known: set[str]
    """Fields whose state is known: in `values`, or known to be absent."""
    filled_at: float
    expires_at: float | None
    fs: FeatureSet | None = None
    """The declaration the values were decoded with (None: nothing decoded yet)."""
    raw: bool = False
    """`values` may hold bytes."""
    row: Row | None = None
    """The last row served for `row_names` (a hit copies it: no decoding, no lookups)."""
    row_names: tuple[str, ...] | None = None

    def changed(self) -> None:
        self.row = self.row_names = None


@dataclass(frozen=True, slots=True)
class _ReadWire:
    """How reading one tuple of names goes on the wire, packed once (redis-py's
    `pack_commands` encodes every argument of every command on every call, which costs more
    than the round trip itself for 50 fields).

    ``HMGET key f1 .. fn`` by default. When the whole row of a set of at least
    `_HGETALL_MIN_FIELDS` fields is asked for, ``HGETALL key`` instead: Redis keeps small
    hashes as listpacks, where HMGET looks each field up by a linear scan (quadratic in the
    row's width: 22 us of server time for 50 fields, against 6 us for HGETALL); below about
    20 fields the two cost the same and HMGET's reply is smaller. The HGETALL reply is mapped
    back onto the names (`align`), so both give the same row.
    """

    names: tuple[str, ...]
    whole: bool
    """HGETALL (else HMGET)."""
    head: bytes
    """The command up to its key."""
    tail: bytes
    """What follows the key (HMGET's field names)."""
    fields: list[bytes]
    """`names` encoded, as HGETALL replies name them."""

    @staticmethod
    def build(names: tuple[str, ...], whole: bool) -> _ReadWire:
        fields = [name.encode() for name in names]
        if whole:
            return _ReadWire(names, True, b"*2\r\n$7\r\nHGETALL\r\n", b"", fields)
        head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(names))
        tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)
        return _ReadWire(names, False, head, tail, fields)

    def align(self, reply: list[Any]) -> list[Any] | InvalidResponse:
        """An HGETALL reply (field, value, field, value, ...) as an HMGET reply of `names`
        (values in their order, None where absent); fields not declared are ignored."""
        if len(reply) % 2:
            return InvalidResponse(f"HGETALL reply of {len(reply)} elements")
        stored = reply[0::2]
        if stored == self.fields:  # written in declaration order, still a listpack
            return reply[1::2]
        by_field = dict(zip(stored, reply[1::2], strict=True))
        return list(map(by_field.get, self.fields))


@dataclass(slots=True)
class _Unflushed:
    """This process' queued writes to one key, merged (read-your-writes overlay)."""

    seq: int
    """Sequence number of the newest queued write to the key."""
    fields: dict[str, bytes]
    expires_at: float | None


def _redact_url(url: str) -> str:
    """`url` with a password (in the authority or a ``password=`` query) masked."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}{port}")
    if "password=" in parts.query:
        query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
        parts = parts._replace(query=query)
    redacted = urlunsplit(parts)
    return url if redacted == urlunsplit(urlsplit(url)) else redacted


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, TimeoutError) and not text:
        return "no reply in time (TimeoutError)"
    return text or type(exc).__name__


def _ttl_left_ms(w: PendingWrite, now: float) -> int | None:
    """What is left of a write's TTL at `now` (0 = expired; None = no TTL)."""
    if w.ttl_ms is None:
        return None
    if not w.queued_at:
        return w.ttl_ms
    return max(0, w.ttl_ms - int((now - w.queued_at) * 1000))


class RedisFeatureStore(FeatureStore):
    """The `FeatureStore` client on Redis (see the module docstring)."""

    backend = "redis"

    def __init__(
        self,
        *,
        namespace: str,
        config: RedisConfig,
        near_cache: NearCacheConfig,
        log: Logger | None = None,
        max_buffered_writes: int = 100_000,
        on_state: StateListener | None = None,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 2.0,
        default_ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """No I/O: `start` connects. `clock` (monotonic seconds) ages near-cache entries; the
        round-trip bounds and back-off always use the event loop's clock."""
        super().__init__(
            namespace=namespace,
            log=log,
            max_buffered_writes=max_buffered_writes,
            on_state=on_state,
            default_ttl_s=default_ttl_s,
        )
        if max_buffered_writes < 1:
            raise ValueError(f"max_buffered_writes must be >= 1, got {max_buffered_writes}")
        if not 0 < retry_initial_s <= retry_max_s:
            raise ValueError("need 0 < retry_initial_s <= retry_max_s")
        self._config = config
        self._near = near_cache
        self.url = _redact_url(config.url)
        """The server's URL as shown in logs and errors (a password is masked)."""
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._op_timeout_s = 2 * config.connect_timeout_s
        self._pool = self._make_pool(config)
        # redis-py leaves it unannotated; typed here once.
        self._get_connection: Callable[[], Awaitable[AbstractConnection]] = (
            self._pool.get_connection
        )
        self._slots = asyncio.Semaphore(config.pool_size)
        self._idle: list[AbstractConnection] = []
        """Pooled connections this client keeps checked out between round trips (see
        `_acquire`); at most ``pool_size`` with those in use, as the slots bound both."""
        self._prefix = f"{namespace}:fs:"
        self._meta_prefix = f"{namespace}:fs:meta:"
        self._active_key = f"{namespace}:fs:active"
        self._meta_key_re = re.compile(
            re.escape(self._meta_prefix) + r"([a-z][a-z0-9_]{0,63}):v([0-9]+)$"
        )

        self._started = False
        self._stopped = False
        self._writer_task: asyncio.Task[None] | None = None
        self._tracking_task: asyncio.Task[None] | None = None
        self._tracking_conn: AbstractConnection | None = None

        # Write-behind: (seq, write) in order; the batch in flight is out of the deque.
        self._seq = 0
        self._queue: deque[tuple[int, PendingWrite]] = deque()
        self._batch: list[tuple[int, PendingWrite]] = []
        self._unflushed: dict[str, _Unflushed] = {}
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._recover_upto: int | None = None
        self._pending_meta: dict[str, FeatureSet] = {}
        self._overflow_unlogged = 0
        self._overflow_logged_at = float("-inf")
        self._refused_unlogged = 0
        self._refused_logged_at = float("-inf")

        # Near cache.
        self._cache: dict[str, _Entry] = {}
        self._wires: dict[tuple[tuple[str, ...], bool], _ReadWire] = {}
        """(names, whole row) -> how such a read is packed (see `_fetch`)."""
        self._wire_last: tuple[ReadPlan, _ReadWire] | None = None
        self._inflight: dict[str, list[int]] = {}
        """key -> [reads in flight, invalidation generation], only while reads are in flight."""
        self._epoch = 0
        self._tracking = False
        self._tracking_refused = False
        self._tracking_warned = False
        self.tracking_connects = 0
        """How many times the invalidation connection was (re)established."""

    # ------------------------------------------------------------------------------ set-up

    @staticmethod
    def _make_pool(config: RedisConfig) -> ConnectionPool:
        scheme = urlsplit(config.url).scheme
        kwargs: dict[str, Any] = {
            "max_connections": config.pool_size,
            "socket_connect_timeout": config.connect_timeout_s,
            # No per-reply timeout inside redis-py: each round trip is bounded as a whole.
            "socket_timeout": None,
            "decode_responses": False,
            # RESP2: the reply shapes (and the invalidation messages) do not depend on the
            # server's or redis-py's default protocol; no HELLO on connect.
            "protocol": 2,
            "client_name": CLIENT_NAME,
        }
        if config.username is not None:
            kwargs["username"] = config.username
        if config.password is not None:
            kwargs["password"] = config.password.get_secret_value()
        if scheme == "rediss" or config.tls:
            if scheme == "unix":
                raise ValueError("feature_store.redis: tls is not supported over unix:// sockets")
            kwargs["connection_class"] = SSLConnection
            if config.ca_file is not None:
                kwargs["ssl_ca_certs"] = str(config.ca_file)
        pool: ConnectionPool = ConnectionPool.from_url(config.url, **kwargs)
        return pool

    async def start(self) -> None:
        """Connect (PING). Unreachable: `FeatureStoreUnavailableError` when the config says
        ``fail``, else start DEGRADED and keep trying in the background."""
        if self._started:
            return
        if self._stopped:
            raise RuntimeError("a stopped RedisFeatureStore cannot be started again")
        reachable = True
        try:
            await self._roundtrip([("PING",)])
        except _UNREACHABLE as exc:
            cause = _describe(exc)
            if self._config.on_unavailable == "fail":
                await self._close_connections()
                raise FeatureStoreUnavailableError(
                    f"Redis at {self.url} is unreachable: {cause}"
                ) from exc
            reachable = False
            self.stats.errors += 1
            self._set_state("DEGRADED", f"redis unreachable: {cause}")
        self._started = True
        tracking_conn: AbstractConnection | None = None
        if self._near.enabled and reachable:
            try:
                tracking_conn = await self._open_tracking()
            except _UNREACHABLE as exc:
                self._tracking_lost(exc)
        self._writer_task = asyncio.create_task(self._run_writer(), name="features-redis-writer")
        if self._near.enabled and not self._tracking_refused:
            self._tracking_task = asyncio.create_task(
                self._run_tracking(tracking_conn), name="features-redis-invalidations"
            )

    async def stop(self) -> None:
        """Flush what can be stored within 2 s (a warning counts what could not), then close
        the invalidation connection and the pool. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._writer_task is not None and not self._writer_task.done():
            with contextlib.suppress(TimeoutError):
                await self.flush(timeout_s=_STOP_FLUSH_S)
        for task in (self._writer_task, self._tracking_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._writer_task = self._tracking_task = None
        lost = self.buffered_writes
        if lost:
            self.log.warning(
                "feature store stopped with writes not stored",
                backend=self.backend,
                url=self.url,
                not_stored=lost,
                reason=self.state_reason,
            )
        self._log_overflow(force=True)
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(
                    FeatureStoreUnavailableError(
                        f"feature store stopped with {lost} writes not stored in Redis"
                    )
                )
        self._waiters.clear()
        await self._close_connections()

    async def _close_connections(self) -> None:
        conn, self._tracking_conn = self._tracking_conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)
        self._tracking = False
        idle, self._idle = self._idle, []
        for pooled in idle:
            with contextlib.suppress(*_UNREACHABLE):
                await self._pool.release(pooled)
        with contextlib.suppress(*_UNREACHABLE):
            await self._pool.aclose()

    # ------------------------------------------------------------------------- round trips

    async def _roundtrip(
        self,
        commands: Sequence[Command],
        *,
        timeout_s: float | None = None,
        packed: bytes | None = None,
    ) -> list[Any]:
        """Send `commands` in one write on one pooled connection and read their replies.

        A reply that is an error comes back as its `ResponseError` (one refused command does
        not fail the others); an unreachable server, or no reply within the bound, raises.
        `packed`: `commands` already in the wire format (reads pack their own, see `_fetch`).
        """
        slots = self._slots
        await slots.acquire()
        try:
            async with asyncio.timeout(timeout_s or self._op_timeout_s):
                conn = await self._acquire()
                clean = False
                try:
                    await conn.send_packed_command(
                        packed if packed is not None else conn.pack_commands(commands),
                        check_health=False,
                    )
                    replies: list[Any] = []
                    for _ in commands:
                        try:
                            replies.append(await conn.read_response())
                        except ResponseError as exc:
                            replies.append(exc)
                    clean = True
                finally:
                    if clean:
                        self._idle.append(conn)
                    else:  # replies may be left unread: never hand it out again
                        await conn.disconnect(nowait=True)
                        await self._pool.release(conn)
        finally:
            slots.release()
        return replies

    async def _acquire(self) -> AbstractConnection:
        """A connection for one round trip: the last one this client used if it is still
        sound, else one from the pool.

        redis-py's pool locks, checks, records metrics and dispatches events on every
        checkout and release, which costs about a tenth of a local round trip; a clean
        connection is therefore kept here instead of released. It gets the same check the pool
        makes before handing a connection out: connected, nothing unread, not closed by the
        server (EOF seen by the event loop). One that fails it goes back to the pool, which
        reconnects it.
        """
        idle = self._idle
        while idle:
            conn = idle.pop()
            try:
                if conn.is_connected and not await _can_read(conn):
                    return conn
            except _UNREACHABLE:
                pass
            await conn.disconnect(nowait=True)
            await self._pool.release(conn)
        return await self._get_connection()

    def _lost(self, exc: BaseException) -> None:
        """A round trip failed: DEGRADED, and let the writer probe for the way back."""
        self.stats.errors += 1
        self._recover_upto = None
        if self.state != "DEGRADED":  # transitions only: no log line per failed retry
            self._set_state("DEGRADED", f"redis unreachable: {_describe(exc)}")
        self._wake.set()

    # ------------------------------------------------------------------------------- reads

    async def _read(
        self, fs: FeatureSet, entities: list[str], names: tuple[str, ...]
    ) -> dict[str, Mapping[str, bytes | FeatureValue] | None]:
        prefix = set_prefix(self.namespace, fs)
        unique = entities if len(entities) == 1 else list(dict.fromkeys(entities))
        if self.state == "DEGRADED":
            self.stats.errors += 1
            return self._serve_stale(fs, prefix, unique, names)
        out: dict[str, Mapping[str, bytes | FeatureValue] | None] = {}
        missing: list[str] = unique
        if self._near.enabled:
            missing = []
            now = self._clock()
            tracking = self._tracking
            ttl = self._near.fallback_ttl_s
            cache = self._cache
            for entity in unique:
                entry = cache.get(prefix + entity)
                if (
                    entry is not None
                    and (tracking or now - entry.filled_at < ttl)
                    and (entry.expires_at is None or now < entry.expires_at)
                ):
                    row = entry.row
                    if row is not None and entry.row_names is names and entry.fs is fs:
                        out[entity] = DecodedRow(row)  # the hit path: a copy, nothing else
                        continue
                    if entry.known.issuperset(names) and (
                        entry.fs is None or entry.fs is fs or entry.fs == fs
                    ):
                        out[entity] = self._cached_row(fs, entry, names)
                        continue
                missing.append(entity)
            self.stats.hits += len(unique) - len(missing)
            self.stats.misses += len(missing)
        # Own writes queued when the read starts: the reply may predate them even if they are
        # stored by the time it arrives, so they are taken now and applied on top.
        own = self._own_writes(prefix, unique) if self._unflushed else {}
        if missing:
            try:
                out.update(await self._fetch(fs, prefix, missing, names))
            except _UNREACHABLE as exc:
                # Everything this read returns is now unconfirmed, cache hits included.
                self._lost(exc)
                return self._serve_stale(fs, prefix, unique, names, count=False)
            if self._unflushed:
                own.update(self._own_writes(prefix, unique))
        if own:
            now = self._clock()
            for entity, pending in own.items():
                if pending.expires_at is None or now < pending.expires_at:
                    found = out.get(entity)
                    merged: dict[str, bytes | FeatureValue] = dict(found) if found else {}
                    merged.update(pending.fields)
                    out[entity] = merged  # a plain dict: decoded by `_decode_row`
        return out

    def _cached_row(
        self, fs: FeatureSet, entry: _Entry, names: tuple[str, ...]
    ) -> Mapping[str, bytes | FeatureValue]:
        """The row of `names` held by `entry` (known to cover them). Values written through
        are decoded here once and kept decoded; the row is kept for the next hit unless it
        holds a value that does not decode (left to `_decode_row`, which reports it)."""
        values = entry.values
        if entry.raw:
            for name in names:
                data = values.get(name)
                if data is not None and not isinstance(data, FeatureValue):
                    with contextlib.suppress(CorruptValueError):
                        values[name] = decode(fs.field(name), data)
            entry.raw = not all(isinstance(v, FeatureValue) for v in values.values())
        entry.fs = fs
        row = {name: values[name] for name in names if name in values}
        if entry.raw and not all(isinstance(v, FeatureValue) for v in row.values()):
            return row
        decoded = cast(Row, row)
        entry.row, entry.row_names = decoded, names
        return DecodedRow(decoded)

    def _own_writes(self, prefix: str, entities: list[str]) -> dict[str, _Unflushed]:
        found: dict[str, _Unflushed] = {}
        for entity in entities:
            pending = self._unflushed.get(prefix + entity)
            if pending is not None:
                found[entity] = pending
        return found

    def _wire(self, plan: ReadPlan) -> _ReadWire:
        last = self._wire_last
        if last is not None and last[0] is plan:
            return last[1]
        whole = plan.every_field and len(plan.names) >= _HGETALL_MIN_FIELDS
        wire = self._wires.get((plan.names, whole))
        if wire is None:
            if len(self._wires) >= 1024:
                self._wires.clear()
            wire = self._wires[(plan.names, whole)] = _ReadWire.build(plan.names, whole)
        self._wire_last = (plan, wire)
        return wire

    async def _fetch(
        self, fs: FeatureSet, prefix: str, entities: list[str], names: tuple[str, ...]
    ) -> dict[str, Mapping[str, bytes | FeatureValue] | None]:
        """One HMGET per entity, or HGETALL when the whole row of a wide set is asked for (see
        `_ReadWire`), and PTTL for the near cache, in one round trip; rows decoded."""
        cached = self._near.enabled
        plan = read_plan(fs, names)
        wire = self._wire(plan)
        keys = [prefix + entity for entity in entities]
        head, tail, whole = wire.head, wire.tail, wire.whole
        commands: list[Command] = []
        packed: list[bytes] = []
        for key in keys:
            commands.append(("HGETALL", key) if whole else ("HMGET", key, *names))
            raw_key = key.encode()
            packed.append(b"%s$%d\r\n%s\r\n%s" % (head, len(raw_key), raw_key, tail))
            if cached:
                commands.append(("PTTL", key))
                packed.append(b"*2\r\n$4\r\nPTTL\r\n$%d\r\n%s\r\n" % (len(raw_key), raw_key))
        if not cached:
            replies = await self._roundtrip(commands, packed=b"".join(packed))
            return {
                entity: self._decoded(plan, wire, entity, reply)[0]
                for entity, reply in zip(entities, replies, strict=True)
            }
        epoch = self._epoch
        generations: list[int] = []
        for key in keys:
            slot = self._inflight.get(key)
            if slot is None:
                slot = self._inflight[key] = [0, 0]
            slot[0] += 1
            generations.append(slot[1])
        try:
            replies = await self._roundtrip(commands, packed=b"".join(packed))
            out: dict[str, Mapping[str, bytes | FeatureValue] | None] = {}
            now = self._clock()
            for i, (entity, key) in enumerate(zip(entities, keys, strict=True)):
                row, keep = self._decoded(plan, wire, entity, replies[2 * i])
                out[entity] = row
                pttl = replies[2 * i + 1]
                # Not cached: a key invalidated or written by us while this read was in
                # flight, or with a write of ours still queued (the reply may predate it).
                if (
                    keep is not None
                    and self._epoch == epoch
                    and self._inflight[key][1] == generations[i]
                    and key not in self._unflushed
                    and isinstance(pttl, int)
                ):
                    expires_at = now + pttl / 1000 if pttl > 0 else None
                    self._fill(key, fs, keep, keep is not row, names, now, expires_at)
            return out
        finally:
            for key in keys:
                slot = self._inflight[key]
                slot[0] -= 1
                if slot[0] == 0:
                    del self._inflight[key]

    def _decoded(
        self, plan: ReadPlan, wire: _ReadWire, entity: str, reply: Any
    ) -> tuple[DecodedRow | None, dict[str, FeatureValue | bytes] | None]:
        """(the row for this read, the values to cache) of one HMGET/HGETALL reply. A value
        that does not decode is reported (by this read) and cached as its bytes, so that every
        later read that is served it reports it too, as without the cache."""
        fs, names = plan.fs, plan.names
        if isinstance(reply, list) and wire.whole:
            reply = wire.align(reply)
        if isinstance(reply, ResponseError) or not isinstance(reply, list):
            self.stats.corrupt += 1
            self.log.warning(
                "feature key unreadable, treated as missing",
                feature_set=fs.ref,
                entity=entity,
                error=_describe(reply) if isinstance(reply, BaseException) else repr(reply),
            )
            return None, None
        decoder = plan.row_decoder
        if decoder is not None:
            values = decoder.decode(reply)
            if values is not None:
                row = DecodedRow(zip(names, values, strict=False))  # lengths checked
                return row, cast(dict[str, FeatureValue | bytes], row)
        if reply.count(None) == len(reply):
            empty = DecodedRow()
            return empty, cast(dict[str, FeatureValue | bytes], empty)
        stored = {
            name: value for name, value in zip(names, reply, strict=True) if value is not None
        }
        decoded = DecodedRow(self._decode_row(fs, entity, stored, names))
        if len(decoded) == len(stored):
            return decoded, cast(dict[str, FeatureValue | bytes], decoded)
        keep: dict[str, FeatureValue | bytes] = dict(stored)
        keep.update(decoded)
        return decoded, keep

    def _fill(
        self,
        key: str,
        fs: FeatureSet,
        values: dict[str, FeatureValue | bytes],
        raw: bool,
        names: tuple[str, ...],
        now: float,
        expires_at: float | None,
    ) -> None:
        entry = self._cache.get(key)
        if (
            entry is not None
            and self._tracking
            and (entry.fs is None or entry.fs is fs or entry.fs == fs)
        ):
            # Still valid (invalidations flow): merge, so alternating readers share an entry.
            entry.values.update(values)
            for name in names:
                if name not in values:
                    entry.values.pop(name, None)
            entry.known.update(names)
            entry.expires_at = expires_at
            entry.fs = fs
            entry.raw = entry.raw or raw
            entry.changed()
            return
        self._cache.pop(key, None)
        self._cache[key] = _Entry(dict(values), set(names), now, expires_at, fs, raw)
        self._evict()

    def _evict(self) -> None:
        while len(self._cache) > self._near.max_entries:
            del self._cache[next(iter(self._cache))]

    def _serve_stale(
        self,
        fs: FeatureSet,
        prefix: str,
        entities: list[str],
        names: tuple[str, ...],
        *,
        count: bool = True,
    ) -> dict[str, Mapping[str, bytes | FeatureValue] | None]:
        """Redis is unreachable: what this process holds, as stale values."""
        out: dict[str, Mapping[str, bytes | FeatureValue] | None] = {}
        now = self._clock()
        hits = 0
        for entity in entities:
            key = prefix + entity
            found: dict[str, FeatureValue | bytes] = {}
            entry = self._cache.get(key)
            if (
                entry is not None
                and (entry.expires_at is None or now < entry.expires_at)
                and (entry.fs is None or entry.fs is fs or entry.fs == fs)
            ):
                found.update(entry.values)
                hits += 1
            pending = self._unflushed.get(key)
            if pending is not None and (pending.expires_at is None or now < pending.expires_at):
                found.update(pending.fields)
            row = DecodedRow()
            for name in names:
                data = found.get(name)
                if data is None:
                    continue
                if isinstance(data, FeatureValue):
                    row[name] = data._replace(stale=True)
                    continue
                try:
                    row[name] = decode(fs.field(name), data, stale=True)
                except CorruptValueError as exc:
                    self._report_corrupt(fs, entity, name, exc)
            out[entity] = row
        if count and self._near.enabled:
            self.stats.hits += hits
            self.stats.misses += len(entities) - hits
        return out

    # ------------------------------------------------------------------------------ writes

    @property
    def buffered_writes(self) -> int:
        """Writes queued (or in flight) and not yet stored in Redis."""
        return len(self._queue) + len(self._batch)

    async def _write(self, writes: list[PendingWrite]) -> None:
        now = self._clock()
        for w in writes:
            self._seq += 1
            expires_at = None if w.ttl_ms is None else now + w.ttl_ms / 1000
            pending = self._unflushed.get(w.key)
            if pending is None:
                self._unflushed[w.key] = _Unflushed(self._seq, dict(w.fields), expires_at)
            else:
                pending.seq = self._seq
                pending.fields.update(w.fields)
                if expires_at is not None:
                    pending.expires_at = expires_at
            if self._near.enabled:
                self._write_through(w, now, expires_at)
            self._queue.append((self._seq, w))
        self._drop_overflow()
        self._wake.set()

    def _write_through(self, w: PendingWrite, now: float, expires_at: float | None) -> None:
        slot = self._inflight.get(w.key)
        if slot is not None:  # a read in flight may carry the value before this one
            slot[1] += 1
        entry = self._cache.get(w.key)
        if entry is None:
            values: dict[str, FeatureValue | bytes] = dict(w.fields)
            self._cache[w.key] = _Entry(values, set(w.fields), now, expires_at, raw=True)
            self._evict()
            return
        entry.values.update(w.fields)
        entry.known.update(w.fields)
        entry.raw = True
        entry.changed()
        if expires_at is not None:
            entry.expires_at = expires_at

    def _drop_overflow(self) -> None:
        excess = len(self._queue) - self.max_buffered_writes
        if excess <= 0:
            return
        for _ in range(excess):
            seq, w = self._queue.popleft()
            self._forget(seq, w)
            self._invalidate(w.key)  # its write-through will never be backed by Redis
        self.stats.dropped_writes += excess
        self._overflow_unlogged += excess
        self._log_overflow()
        self._notify()

    def _log_overflow(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._overflow_unlogged and (force or now - self._overflow_logged_at >= _LOG_INTERVAL_S):
            self.log.warning(
                "feature store write buffer full: oldest writes dropped",
                backend=self.backend,
                dropped=self._overflow_unlogged,
                dropped_total=self.stats.dropped_writes,
                buffered=self.buffered_writes,
                max_buffered_writes=self.max_buffered_writes,
                reason=self.state_reason,
            )
            self._overflow_unlogged = 0
            self._overflow_logged_at = now

    def _forget(self, seq: int, w: PendingWrite) -> None:
        """A queued write is resolved (stored, dropped or refused): leave the overlay."""
        pending = self._unflushed.get(w.key)
        if pending is not None and pending.seq == seq:
            del self._unflushed[w.key]

    def _done_upto(self) -> int:
        """Every write with a sequence number up to this one is resolved."""
        if self._batch:
            return self._batch[0][0] - 1
        if self._queue:
            return self._queue[0][0] - 1
        return self._seq

    def _notify(self) -> None:
        if not self._waiters:
            return
        done = self._done_upto()
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if target <= done:
                fut.set_result(None)
            else:
                keep.append((target, fut))
        self._waiters = keep

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every write queued before this call is stored in Redis (or dropped).

        Without `timeout_s` it waits as long as Redis is away (the caller decides); with it,
        `TimeoutError` says how many writes are still buffered."""
        target = self._seq
        if self._done_upto() >= target:
            return
        if self._writer_task is None or self._writer_task.done():
            raise RuntimeError(
                f"feature store (redis) is not running; {self.buffered_writes} writes buffered"
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (target, fut)
        self._waiters.append(waiter)
        try:
            if timeout_s is None:
                await fut
            else:
                async with asyncio.timeout(timeout_s):
                    await fut
        except TimeoutError:
            raise TimeoutError(
                f"feature store flush: {self.buffered_writes} writes not stored in Redis at "
                f"{self.url} after {timeout_s} s ({self.state}: {self.state_reason})"
            ) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if not fut.done():
                fut.cancel()

    async def _run_writer(self) -> None:
        """Send queued writes in batches; probe and back off while Redis is unreachable."""
        delay = self._retry_initial_s
        while True:
            if not self._queue and not self._pending_meta and self.state == "RUNNING":
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if self._queue:
                    await self._send_batch()
                else:
                    await self._roundtrip([("PING",)])
                if self._pending_meta:
                    pending = list(self._pending_meta.values())
                    await self._store_meta(pending)
                    for fs in pending:
                        self._pending_meta.pop(fs.ref, None)
            except _UNREACHABLE as exc:
                self._lost(exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self._retry_max_s)
                continue
            except ResponseError as exc:  # a registration refused (ACLs): not retried
                self.stats.errors += 1
                self.log.error(
                    "feature set registration refused by redis",
                    feature_sets=sorted(self._pending_meta),
                    error=_describe(exc),
                )
                self._pending_meta.clear()
                continue
            except Exception:
                # A bug must not stop the writer for good (the batch was dropped).
                self.stats.errors += 1
                self.log.exception("feature store writer failed; continuing", url=self.url)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self._retry_max_s)
                continue
            delay = self._retry_initial_s
            if self.state == "DEGRADED":
                if self._recover_upto is None:
                    self._recover_upto = self._seq
                    self.log.info(
                        "redis reachable again", url=self.url, still_buffered=self.buffered_writes
                    )
                if self._done_upto() >= self._recover_upto:
                    self._recover_upto = None
                    self._set_state("RUNNING", "redis reachable")

    async def _send_batch(self) -> None:
        size = 0
        now = time.monotonic()
        while self._queue and len(self._batch) < _BATCH_MAX_WRITES and size < _BATCH_MAX_BYTES:
            item = self._queue.popleft()
            w = item[1]
            if _ttl_left_ms(w, now) == 0:
                # The TTL runs from the put: a write that expired while it waited out an
                # outage is not stored (it would come back to life), only counted.
                self.stats.expired_in_buffer += 1
                self._forget(item[0], w)
                self._invalidate(w.key)
                continue
            self._batch.append(item)
            size += sum(len(v) for v in item[1].fields.values())
        commands: list[Command] = []
        for _, w in self._batch:
            hset: list[str | bytes | int] = ["HSET", w.key]
            for name, value in w.fields.items():
                hset.append(name)
                hset.append(value)
            commands.append(tuple(hset))
            left = _ttl_left_ms(w, now)
            if left is not None:
                commands.append(("PEXPIRE", w.key, left))
        if not self._batch:  # everything taken had expired
            self._notify()
            return
        started = time.perf_counter()
        try:
            replies = await self._roundtrip(commands)
        except (*_UNREACHABLE, asyncio.CancelledError):
            # Keep the batch at the front of the queue, then apply the bound to it too.
            self._queue.extendleft(reversed(self._batch))
            self._batch = []
            self._drop_overflow()
            raise
        except Exception:
            # Not the network: resending the same batch would fail the same way.
            batch, self._batch = self._batch, []
            for seq, w in batch:
                self._forget(seq, w)
                self._invalidate(w.key)
            self._notify()
            raise
        if self.write_latency is not None:
            self.write_latency(time.perf_counter() - started)
        batch, self._batch = self._batch, []
        it = iter(replies)
        stored = 0
        for seq, w in batch:
            outcome = [next(it)] if w.ttl_ms is None else [next(it), next(it)]
            error = next((r for r in outcome if isinstance(r, ResponseError)), None)
            if error is not None:
                self._refused(w, error)
                self._invalidate(w.key)
            else:
                stored += 1
                slot = self._inflight.get(w.key)
                if slot is not None:  # a read in flight may carry the value before this one
                    slot[1] += 1
            self._forget(seq, w)
        self.stats.flushed += stored
        self._notify()

    def _refused(self, w: PendingWrite, error: ResponseError) -> None:
        self.stats.errors += 1
        self._refused_unlogged += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= _LOG_INTERVAL_S:
            self.log.warning(
                "feature write refused by redis, not retried",
                backend=self.backend,
                key=w.key,
                error=_describe(error),
                refused=self._refused_unlogged,
            )
            self._refused_unlogged = 0
            self._refused_logged_at = now

    # ----------------------------------------------------------------------- invalidations

    @property
    def near_cache_enabled(self) -> bool:
        return self._near.enabled

    @property
    def tracking(self) -> bool:
        """True while invalidation messages flow (near-cache entries need no TTL)."""
        return self._tracking

    @property
    def near_cache_size(self) -> int:
        return len(self._cache)

    def is_cached(self, key: str) -> bool:
        """Whether the near cache holds an entry for `key` (tests, diagnostics)."""
        return key in self._cache

    async def _enable_tracking(self, conn: AbstractConnection, client_id: int) -> None:
        """Turn on BCAST tracking of our prefix, redirected to `client_id` (a `ResponseError`
        means the server refuses it: ACLs, a proxy, an old server)."""
        await conn.send_command(
            "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", "PREFIX", self._prefix
        )
        await conn.read_response()

    async def _open_tracking(self) -> AbstractConnection | None:
        """The dedicated invalidation connection, tracking and subscribed; None if the server
        refuses tracking (the near cache then runs on its fallback TTL)."""
        kwargs = {**self._pool.connection_kwargs, "client_name": TRACKING_CLIENT_NAME}
        conn = self._pool.connection_class(**kwargs)
        ok = False
        try:
            async with asyncio.timeout(self._op_timeout_s):
                connect: Callable[[], Awaitable[None]] = conn.connect
                await connect()
                try:
                    await conn.send_command("CLIENT", "ID")
                    client_id = int(await conn.read_response())
                    await self._enable_tracking(conn, client_id)
                    await conn.send_command("SUBSCRIBE", INVALIDATION_CHANNEL)
                    reply = await conn.read_response()
                except ResponseError as exc:
                    self._tracking_refused = True
                    self.log.warning(
                        "near cache: redis refused client tracking; entries expire after "
                        "fallback_ttl_s instead of on invalidation",
                        url=self.url,
                        error=_describe(exc),
                        fallback_ttl_s=self._near.fallback_ttl_s,
                    )
                    return None
            if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                raise RedisConnectionError(f"unexpected reply to SUBSCRIBE: {reply!r}")
            ok = True
        finally:
            if not ok:
                await conn.disconnect(nowait=True)
        # Invalidations may have been missed before this point: start from an empty cache.
        self._invalidate_all()
        self._tracking = True
        self._tracking_warned = False
        self._tracking_conn = conn
        self.tracking_connects += 1
        if self.tracking_connects > 1:
            self.log.info("near cache invalidations flowing again; cache flushed", url=self.url)
        return conn

    def _tracking_lost(self, exc: BaseException) -> None:
        self.stats.errors += 1
        if not self._tracking_warned:
            self._tracking_warned = True
            self.log.warning(
                "near cache invalidations interrupted; entries expire after fallback_ttl_s "
                "until reconnected",
                url=self.url,
                error=_describe(exc),
                fallback_ttl_s=self._near.fallback_ttl_s,
            )
        self._tracking = False

    async def _run_tracking(self, conn: AbstractConnection | None) -> None:
        delay = self._retry_initial_s
        while True:
            try:
                if conn is None:
                    conn = await self._open_tracking()
                    if conn is None:
                        return  # refused: fallback TTL for good (warned)
                delay = self._retry_initial_s
                await self._consume(conn)
            except _UNREACHABLE as exc:
                self._tracking_lost(exc)
            except Exception:
                # A bug must not end invalidations for good: the cache would go stale.
                self.stats.errors += 1
                self.log.exception("near cache invalidation reader failed; reconnecting")
            finally:
                self._tracking = False
                if conn is not None:
                    await conn.disconnect(nowait=True)
                    conn = self._tracking_conn = None
            await asyncio.sleep(delay)
            delay = min(2 * delay, self._retry_max_s)

    async def _consume(self, conn: AbstractConnection) -> None:
        """Apply invalidation messages until the connection fails (PING when idle)."""
        loop = asyncio.get_running_loop()
        interval = min(_PING_INTERVAL_S, self._near.fallback_ttl_s)
        ping_deadline: float | None = None
        while True:
            message = await conn.read_response(timeout=interval)
            if message is None:
                now = loop.time()
                if ping_deadline is None:
                    await conn.send_command("PING")
                    ping_deadline = now + self._config.connect_timeout_s
                elif now >= ping_deadline:
                    raise RedisTimeoutError("invalidation connection: no reply to PING")
                continue
            ping_deadline = None
            if (
                isinstance(message, list)
                and len(message) == 3
                and message[0] == b"message"
                and message[1] == INVALIDATION_CHANNEL.encode()
            ):
                keys = message[2]
                if keys is None:
                    self.stats.invalidations += 1
                    self._invalidate_all()
                else:
                    self.stats.invalidations += len(keys)
                    for raw in keys:
                        self._invalidate(raw.decode("utf-8", "surrogateescape"))

    def _invalidate(self, key: str) -> None:
        self._cache.pop(key, None)
        slot = self._inflight.get(key)
        if slot is not None:
            slot[1] += 1

    def _invalidate_all(self) -> None:
        self._cache.clear()
        self._epoch += 1

    # ------------------------------------------------------------------------------- admin

    async def _admin(self, commands: Sequence[Command]) -> list[Any]:
        try:
            return await self._roundtrip(commands, timeout_s=_ADMIN_TIMEOUT_S)
        except _UNREACHABLE as exc:
            raise FeatureStoreUnavailableError(
                f"Redis at {self.url} is unreachable: {_describe(exc)}"
            ) from exc

    @staticmethod
    def _check(reply: Any) -> Any:
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _meta_key(self, name: str, version: int) -> str:
        return f"{self._meta_prefix}{name}:v{version}"

    async def _store_meta(self, sets: Sequence[FeatureSet]) -> None:
        commands: list[Command] = []
        for fs in sets:
            declaration = json.dumps(fs.describe(), sort_keys=True)
            commands.append(("SET", self._meta_key(fs.name, fs.version), declaration))
            commands.append(("HSETNX", self._active_key, fs.name, fs.version))
        for reply in await self._roundtrip(commands):
            self._check(reply)

    async def register(self, fs: FeatureSet) -> None:
        """Store the declaration at ``<ns>:fs:meta:<name>:v<version>``; the first version
        registered under a name becomes active. Redis unreachable: kept and stored by the
        writer when Redis is back (a warning says so)."""
        try:
            await self._store_meta([fs])
        except _UNREACHABLE as exc:
            self._pending_meta[fs.ref] = fs
            self.log.warning(
                "feature set registration deferred until redis is reachable",
                feature_set=fs.ref,
                error=_describe(exc),
            )
            self._lost(exc)

    async def _scan(self, pattern: str) -> list[str]:
        keys: list[str] = []
        cursor: bytes | int = 0
        while True:
            reply = self._check(
                (await self._admin([("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)]))[0]
            )
            cursor = reply[0]
            keys.extend(k.decode("utf-8", "surrogateescape") for k in reply[1])
            if int(cursor) == 0:
                return keys

    async def list_sets(self) -> list[SetInfo]:
        """Every registered (name, version) with its figures.

        ``entities`` counts every key of the set (one SCAN over ``<ns>:fs:*``). ``bytes`` is the
        sum of ``MEMORY USAGE`` (Redis' own accounting, overhead included) over up to 1000 keys
        per set; beyond that it is an estimate scaled from that sample. ``newest_ts`` is read
        from the values' timestamp headers on the same sample of up to 1000 keys.
        """
        keys = await self._scan(f"{self._prefix}*")
        metas: list[tuple[str, int, str]] = []
        for key in keys:
            match = self._meta_key_re.match(key)
            if match is not None:
                metas.append((match[1], int(match[2]), key))
        if not metas:
            return []
        replies = await self._admin(
            [("MGET", *(key for _, _, key in metas)), ("HGETALL", self._active_key)]
        )
        declarations = self._check(replies[0])
        active_raw = self._check(replies[1])
        active = {
            k.decode(): int(v)
            for k, v in zip(active_raw[::2], active_raw[1::2], strict=True)
            if v.isdigit()
        }
        counts: dict[tuple[str, int], int] = {}
        samples: dict[tuple[str, int], list[str]] = {}
        wanted = {(name, version) for name, version, _ in metas}
        for key in keys:
            parts = key[len(self._prefix) :].split(":", 2)
            if len(parts) != 3 or not parts[1].startswith("v") or not parts[1][1:].isdigit():
                continue
            ident = (parts[0], int(parts[1][1:]))
            if ident not in wanted:
                continue
            counts[ident] = counts.get(ident, 0) + 1
            sample = samples.setdefault(ident, [])
            if len(sample) < _LIST_SAMPLE_KEYS:
                sample.append(key)
        out: list[SetInfo] = []
        for (name, version, key), raw in zip(metas, declarations, strict=True):
            if raw is None:  # deleted since the SCAN, or not a string
                continue
            try:
                declaration = json.loads(raw)
            except ValueError:
                self.log.warning("feature set declaration is not JSON; skipped", key=key)
                continue
            ident = (name, version)
            sample = samples.get(ident, [])
            size, newest = await self._measure(sample)
            total = counts.get(ident, 0)
            if sample and total > len(sample):
                size = round(size * total / len(sample))
            out.append(
                SetInfo(
                    name=name,
                    version=version,
                    declaration=declaration,
                    entities=total,
                    bytes=size,
                    newest_ts=us_to_ts(newest) if newest is not None else None,
                    active=active.get(name) == version,
                )
            )
        return sorted(out, key=lambda i: (i.name, i.version))

    async def _measure(self, keys: list[str]) -> tuple[int, int | None]:
        """(bytes, newest ts in us) of `keys`: MEMORY USAGE, and the values' ts headers."""
        size = 0
        newest: int | None = None
        for start in range(0, len(keys), _HVALS_CHUNK):
            chunk = keys[start : start + _HVALS_CHUNK]
            commands: list[Command] = []
            for key in chunk:
                commands.append(("MEMORY", "USAGE", key))
                commands.append(("HVALS", key))
            replies = await self._admin(commands)
            for usage, values in zip(replies[::2], replies[1::2], strict=True):
                if isinstance(values, ResponseError) or not isinstance(values, list):
                    continue
                if isinstance(usage, int):
                    size += usage
                else:  # MEMORY refused (ACL): count the values' bytes instead
                    size += sum(len(v) for v in values)
                for value in values:
                    ts_us = stored_ts_us(value)
                    if ts_us is not None:
                        newest = ts_us if newest is None else max(newest, ts_us)
        return size, newest

    async def promote(self, name: str, version: int) -> None:
        exists = self._check((await self._admin([("EXISTS", self._meta_key(name, version))]))[0])
        if not exists:
            raise UnknownFeatureSetError(f"feature set {name}:v{version} is not registered")
        self._check((await self._admin([("HSET", self._active_key, name, version)]))[0])

    async def active_version(self, name: str) -> int | None:
        reply = self._check((await self._admin([("HGET", self._active_key, name)]))[0])
        return None if reply is None else int(reply)


__all__ = [
    "CLIENT_NAME",
    "TRACKING_CLIENT_NAME",
    "FeatureStoreUnavailableError",
    "RedisFeatureStore",
]
